"""Explain a data set on Ray: a pool of actors that load the models once, chunks in, rows back in order.

``texplain explain-dataset … --engine ray [--address ADDR]`` hands the chunks
of the labelled set, as a Ray dataset, to a pool of actors: one per GPU
(``--device cuda``), or CPU actors of ``--cpus-per-actor`` cores each. Every
actor loads the classifier, translator and LM once and explains a chunk as
the single-process path does
(:func:`~texplain.analysis.explain_dataset.explain_chunk`): features into
the feature store under its own writer name, then translator, sampling and
rows. The rows come back to the calling process in the chunks' order (Ray
Data's ``preserve_order``) and are committed there, one part per chunk, as
without Ray; since every image is sampled with the same seed, the folder
holds the same rows. A killed run is resumed by running it again.

Every node must see the results folder, its feature store and the models at
the same paths (a shared filesystem).

A Ray instance started here (no ``--address``, no ``RAY_ADDRESS``) keeps its
sockets, logs and spilled objects in the results folder's ``.ray`` (or, when
that path is too long for a socket's name, in a private folder of the
system's temporary folder, ``texplain-ray-*``), not in ``/tmp/ray``, and that
folder is deleted when the instance stops. Its authentication token is this
process's own (``RAY_AUTH_TOKEN``), not one written to ``~/.ray/auth_token``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from texplain.analysis.config import DatasetExplainConfig
from texplain.analysis.explain_dataset import Chunk, Explained, explain_chunk
from texplain.data.labelled import LabelledImage
from texplain.errors import TexplainError, first_line
from texplain.optional import require

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"
"""Ray's token for a local instance: set here, or Ray writes one to ``~/.ray/auth_token`` (unless a path is set)."""
SOCKET_NAME_MAX = 107
"""The longest path of a Unix socket (108 bytes with its end) on Linux; Ray's live in its temporary folder."""
SOCKET_SUFFIX = "/session_2025-01-01_00-00-00_000000_9999999/sockets/plasma_store"
"""The longest path Ray puts under its temporary folder: a session's socket."""


@dataclass
class RayEngine:
    """Where and how the actors run: the models by name (as the command line takes them), device, cluster, pool.

    translator, classifier, lm: as :func:`~texplain.models.explainer.load_explainer`
    takes them. device: ``cpu`` or ``cuda`` (one GPU per actor). address:
    the cluster (None: ``RAY_ADDRESS``, else a local instance). actors: the
    pool's size (None: one per GPU, or the cluster's CPUs over
    ``cpus_per_actor``). trust_code: as load_explainer's. temp_dir: where
    an instance started here keeps its files (see the module docstring;
    None: a private temporary folder).
    """

    translator: str
    classifier: str | None = None
    lm: str | None = None
    device: str = "cpu"
    address: str | None = None
    actors: int | None = None
    cpus_per_actor: int = 1
    trust_code: bool = False
    temp_dir: str | None = None
    _started: bool = field(default=False, init=False, repr=False)
    _own_dir: Path | None = field(default=None, init=False, repr=False)
    _own_token: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise TexplainError(f"--engine ray runs on cpu or cuda (a GPU per actor), not {self.device}")
        if (self.actors is not None and self.actors < 1) or self.cpus_per_actor < 1:
            raise TexplainError("--actors and --cpus-per-actor must be at least 1")
        require("ray.data", "--engine ray", "distributed")

    def connect(self) -> None:
        """Join the cluster at ``address`` (or start a local instance); an unreachable one is a one-line error."""
        ray = require("ray", "--engine ray", "distributed")
        if self.address not in (None, "", "auto", "local"):
            _check_reachable(self.address)
        if ray.is_initialized():
            self._pool_size(ray)
            return
        local = self.address in (None, "", "local") and not os.environ.get("RAY_ADDRESS")
        try:
            ray.init(address=self.address or None, log_to_driver=False, logging_level=logging.WARNING,
                     **({"_temp_dir": str(self._start_here())} if local else {}))
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            self.close()
            where = f"at {self.address}" if self.address else "(local)"
            raise TexplainError(f"Ray cluster {where}: cannot connect ({first_line(exc)})") from exc
        self._started = True
        self._pool_size(ray)  # a cluster without the GPUs asked for fails here, before anything is written

    def close(self) -> None:
        """Stop a Ray instance this engine started, and delete its temporary folder and token."""
        if self._started:
            require("ray", "--engine ray", "distributed").shutdown()
            self._started = False
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        if self._own_token:
            os.environ.pop(TOKEN_VARIABLE, None)
            self._own_token = False

    def _start_here(self) -> Path:
        """The temporary folder of a Ray instance started here, and its token in this process's environment."""
        folder = Path(self.temp_dir).absolute() if self.temp_dir else None
        if folder is None or len(str(folder) + SOCKET_SUFFIX) > SOCKET_NAME_MAX:
            folder = Path(tempfile.mkdtemp(prefix="texplain-ray-"))
        folder.mkdir(parents=True, exist_ok=True)
        self._own_dir = folder
        configured = any(os.environ.get(name) for name in (TOKEN_VARIABLE, "RAY_AUTH_TOKEN_PATH"))
        if not configured and not (Path.home() / ".ray" / "auth_token").is_file():
            os.environ[TOKEN_VARIABLE] = secrets.token_hex(32)  # Ray's own would be written to ~/.ray/auth_token
            self._own_token = True
        return folder

    def explain(
        self, chunks: Sequence[Chunk], features: Path, config: DatasetExplainConfig, index: Mapping[str, Sequence[str]]
    ) -> Iterator[Explained]:
        """Each chunk's rows and skipped images, in the chunks' order, explained by the actors."""
        if not chunks:
            return
        self.connect()
        import ray
        import ray.data

        try:
            context = ray.data.DataContext.get_current()
            context.execution_options.preserve_order = True
            context.enable_progress_bars = False
            actors = min(self._pool_size(ray), len(chunks))
            log.info("explaining %d chunks on %d Ray actors (%s)", len(chunks), actors, self.device)
            dataset = ray.data.from_items(
                [{"chunk": number, "items": json.dumps([_item(i) for i in chunk])} for number, chunk in enumerate(chunks)],
                override_num_blocks=len(chunks),
            )
            explained = dataset.map_batches(
                ChunkActor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
                fn_constructor_kwargs={"engine": self, "features": str(features), "config": config, "index": dict(index)},
                **({"num_gpus": 1} if self.device == "cuda" else {"num_cpus": self.cpus_per_actor}),
            )
            for row in _rows_of(explained):
                yield json.loads(row["rows"]), [tuple(entry) for entry in json.loads(row["skipped"])]
        finally:
            self.close()

    def _pool_size(self, ray) -> int:
        """``actors``, or what the cluster holds: its GPUs, or its CPUs over ``cpus_per_actor``.

        A pool the cluster cannot hold is refused: Ray would wait for it forever.
        """
        resources = ray.cluster_resources()
        per_actor, kind = (1, "GPU") if self.device == "cuda" else (self.cpus_per_actor, "CPU")
        fits = int(resources.get(kind, 0)) // per_actor
        if fits == 0:
            raise TexplainError(f"--engine ray --device {self.device}: the Ray cluster has no {kind}s for an actor "
                                f"({resources.get(kind, 0):g} {kind}s)")
        if self.actors is not None and self.actors > fits:
            raise TexplainError(f"--actors {self.actors}: the Ray cluster holds {fits} such actors "
                                f"({resources.get(kind, 0):g} {kind}s, {per_actor} each)")
        return self.actors or fits


class ChunkActor:
    """A Ray actor: loads the models once, then explains the chunks it is given (one per call)."""

    def __init__(self, engine: RayEngine, features: str, config: DatasetExplainConfig, index: dict):
        import torch

        from texplain.models.explainer import load_explainer
        from texplain.models.features import open_store

        if engine.device == "cpu":
            torch.set_num_threads(engine.cpus_per_actor)
        self.explainer = load_explainer(engine.translator, engine.classifier, engine.lm, engine.device, engine.trust_code)
        self.store = open_store(features, self.explainer.classifier, config.extraction)
        self.config, self.index = config, index
        self.writer = f"ray{secrets.token_hex(4)}"  # this actor's shards in the shared store

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, list[str]]:
        rows, skipped = [], []
        for text in batch["items"]:
            chunk = [LabelledImage(Path(i["path"]), i["label"], i["split"], i["group"]) for i in json.loads(text)]
            explained, bad = explain_chunk(self.explainer, self.store, chunk, self.config, self.index, self.writer)
            rows.append(json.dumps(explained))
            skipped.append(json.dumps(bad))
        return {"rows": rows, "skipped": skipped}


def _rows_of(dataset) -> Iterator[dict]:
    """The dataset's rows as they arrive; a failure inside an actor becomes its own one-line error."""
    try:
        yield from dataset.iter_rows()
    except Exception as exc:
        cause = _texplain_cause(exc)
        if cause is not None:
            raise TexplainError(str(cause)) from exc
        raise


def _texplain_cause(exc: BaseException) -> TexplainError | None:
    """The :class:`TexplainError` an actor raised, found through the exceptions Ray wraps it in."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TexplainError):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__
    return None


def _item(image: LabelledImage) -> dict:
    return {"path": str(image.path), "label": image.label, "split": image.split, "group": image.group}


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, when nothing listens at ``[ray://]host:port``: Ray itself retries for a long while."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():
        raise TexplainError(f"--address {address}: expected host:port (or ray://host:port, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise TexplainError(f"Ray cluster at {address}: unreachable ({exc.strerror or exc}); start one with "
                            "`ray start --head` there, or check --address") from exc
