"""Loading Hugging Face models safely: no code of theirs runs untrusted, and a damaged one is one line.

A model folder or hub repository can map transformers' Auto classes to
modules of its own (``"auto_map": {"AutoModelForCausalLM": "evil.Model"}``
in its ``config.json``, ``tokenizer_config.json`` or
``preprocessor_config.json``); transformers then imports and runs them when
``trust_remote_code`` allows it, and when it is left unset, asks
"run the custom code? [y/N]" on stdin. texplain always passes
``trust_remote_code`` explicitly, False unless the user said ``--trust-code``
(``trust_code=True`` in Python), so transformers never asks, and refuses such
a model before loading it, in one line naming the file and the code.

``from_pretrained`` raises half a dozen types for a damaged folder (a
truncated ``model.safetensors``, ``"n_layer": "two"`` in ``config.json``,
nesting too deep for Python): :data:`HF_LOAD_ERRORS` lists them, for the
loaders to turn into one line naming the model.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from texplain.data.files import load_json
from texplain.errors import TexplainError

HF_LOAD_ERRORS = (OSError, ValueError, TypeError, RuntimeError, SafetensorError, StrictDataclassError)
"""What ``from_pretrained`` raises on a missing, damaged or mistyped model (RecursionError is a RuntimeError)."""

CONFIG_FILES = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json")
"""The files of a Hugging Face model whose ``auto_map`` names code that transformers would run."""


def check_remote_code(name: str, what: str, trust_code: bool, files: tuple[str, ...] = CONFIG_FILES) -> None:
    """Refuse ``name`` (a folder or hub id) when one of its ``files`` maps an Auto class to its own code.

    ``what`` names the model in the message ("language model gpt2"). Nothing
    is checked when ``trust_code``. A hub file not on disk is fetched as
    ``from_pretrained`` would fetch it; one that cannot be found is no code.
    """
    if trust_code:
        return
    for filename in files:
        path = _config_file(name, filename)
        if path is None:
            continue
        config = load_json(path)
        code = config.get("auto_map") if isinstance(config, dict) else None
        if code:
            shown = ", ".join(str(v) for v in code.values()) if isinstance(code, dict) else str(code)
            raise TexplainError(f"{what}: its {filename} names Python code of its own to run (auto_map: {shown[:120]}); "
                                "load it only if you trust it, with --trust-code")


def _config_file(name: str, filename: str) -> Path | None:
    """``filename`` of the folder ``name``, or of the hub repository ``name`` (cached or fetched); None when absent."""
    folder = Path(name)
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(name, filename, _raise_exceptions_for_gated_repo=False,
                            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None  # not a hub id either: from_pretrained says so, in its own words
    return Path(found) if found else None
