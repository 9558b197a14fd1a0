"""The static decoder: every sentence of a call through one batch of fixed shape, its step a CUDA graph on GPUs.

On a GPU the eager decoder is launch- and host-bound: hundreds of small
kernels per step and a dozen moments per step where the host waits for the
device (which rows live, how many draws were rejected). This decoder keeps
the device busy instead, as gpt-fast does:

- **one batch, refilled.** The rows of a batch are slots; the sentences of a
  call (all N of an image, and of several images) queue for them. A slot whose
  sentence has ended takes the next sentence in place: its image's prefix is
  copied into its first positions (:class:`~.prefix_cache.StaticPrefixLayer`)
  and it starts again at position P while the others go on.
- **a static cache, a captured step.** Keys and values live in buffers
  allocated once; each row writes at its own position and attends through a
  mask to the positions before it. The step (:meth:`StaticDecoder.forward`)
  never changes a shape or an address, so on CUDA it is captured once as a
  ``torch.cuda.CUDAGraph`` and replayed; elsewhere the same function runs
  eagerly (the CPU tests run it).
- **nothing waits for the host.** Each sentence's random numbers are drawn
  before it starts (one uniform per token, from its image's generator, in the
  image's order), the nucleus is found among the top candidates and sorted
  whole only for the rows that need it, in a batch of fixed size
  (:func:`~.nucleus.fast_nucleus`), and words, word limits and ends are
  counted on the device. The host looks every :data:`CHECK_EVERY` steps, to
  refill finished rows and to stop.

A sentence is a function of its image's prefix and its own uniforms, so an
image gets the same sentences whatever shares its batch and however large the
batch is (up to the effect of batching on the LM's floating-point sums). The
draw is the exact nucleus distribution, as the eager decoder's is, but from
other random numbers: the two give different sentences for one seed.
"""

from __future__ import annotations

import copy
import logging
import math
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache

from texplain.errors import first_line
from texplain.generate.device_plan import DecodePlan
from texplain.generate.nucleus import CANDIDATES, fast_nucleus
from texplain.generate.prefix_cache import StaticPrefixLayer, cache_argument, encode_prefix
from texplain.generate.word_boundaries import padded_word_tables, word_step
from texplain.models.lm import FrozenLM

if TYPE_CHECKING:
    from texplain.generate.config import SamplingConfig

log = logging.getLogger(__name__)

CHECK_EVERY = 4
"""Steps between the host's looks at the batch (refill finished rows, stop): the only waits for the device."""

CAPACITY_MARGIN = 1.25
"""Rows that need more candidates are batched for as many as the last call's busiest step had, times this."""

WARMUP_STEPS = 2
"""Eager steps on a side stream before a step is captured (CUDA initialises its libraries there, not in the graph)."""

KEPT_DECODERS = 3
"""Static decoders kept per LM (each holds a batch's cache and graph): calls of fewer sentences than the plan's rows
take the power of two above their count, so a run meets few shapes (their memory is under 1.75 times the largest)."""

_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per LM model: its decoders by shape, most recently used last."""

_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
"""Per LM model: its weights in another dtype (bfloat16 on GPUs), by (device, dtype)."""


def decode_static(
    lm: FrozenLM,
    prefixes: Tensor,
    rows: Sequence[int],
    generators: Sequence[torch.Generator],
    config: SamplingConfig,
    plan: DecodePlan,
    budget: int,
) -> list[list[list[int]]]:
    """Decode ``rows[i]`` sentences after prefix i of prefixes (n, P, d); token ids per image, as the eager path gives.

    ``plan`` says how many rows at most, in
    what dtype, and whether the step is a CUDA graph. A call of fewer
    sentences than the plan's rows gets the power of two above their count.
    """
    model = decoding_model(lm, plan.dtype)
    with torch.inference_mode():
        keys, values, first_logits = encode_prefix(lm, prefixes, model)
        uniforms = torch.cat([torch.rand((n, budget), generator=g, dtype=torch.float64, device=lm.device)
                              for n, g in zip(rows, generators)])  # (S, budget)
        image = [i for i, n in enumerate(rows) for _ in range(n)]  # (S,) on the host
        decoder = static_decoder(lm, model, min(plan.rows, 1 << (len(image) - 1).bit_length()), keys, budget,
                                 plan.graph)
        tokens, lengths = decoder.decode(model, keys, values, first_logits, image, uniforms, config)
        lengths = lengths.tolist()
        ids = [row[:n] for row, n in zip(tokens[:, : max(lengths, default=0)].tolist(), lengths)]
    out: list[list[list[int]]] = [[] for _ in rows]
    for sentence, i in zip(ids, image):
        out[i].append(sentence)
    return out


def decoding_model(lm: FrozenLM, dtype: torch.dtype) -> nn.Module:
    """The LM's weights in ``dtype``: the LM itself, or a copy made once (the LM keeps its own dtype for training)."""
    if dtype == lm.dtype:
        return lm.model
    copies = _COPIES.setdefault(lm.model, {})
    key = (str(lm.device), dtype)
    if key not in copies:
        copies.clear()
        copies[key] = copy.deepcopy(lm.model).to(dtype)
    return copies[key]


def static_decoder(lm: FrozenLM, model: nn.Module, rows: int, keys: Sequence[Tensor], budget: int,
                   graph: bool) -> StaticDecoder:
    """The decoder of this shape for ``model``, made (and captured) the first time and kept after."""
    weights = next(model.parameters())
    shape = (rows, keys[0].shape[2], budget, graph, weights.data_ptr(), weights.dtype)
    kept = _DECODERS.setdefault(lm.model, {})
    decoder = kept.pop(shape, None)
    if decoder is None:
        if len(kept) >= KEPT_DECODERS:
            kept.pop(next(iter(kept)))
        decoder = StaticDecoder(lm, model, rows, keys, budget, graph)
    kept[shape] = decoder
    return decoder


class StaticDecoder:
    """A batch of ``rows`` slots with a static cache for prefixes of P positions and sentences of ``budget`` tokens.

    Made from the prefix keys (one (n, H, P, hd) per layer) of the first
    call, which give its layers' shapes. ``graph``: capture :meth:`forward`
    as a CUDA graph (if capturing fails, the step runs eagerly and a warning
    says why). ``capacities``: per tier of candidates, how many rows go on to
    the next one in a step (see :func:`~.nucleus.fast_nucleus`); all rows at
    first, then what the last call needed with a margin.
    """

    def __init__(self, lm: FrozenLM, model: nn.Module, rows: int, keys: Sequence[Tensor], budget: int, graph: bool):
        device, dtype = keys[0].device, keys[0].dtype
        self.rows, self.budget, self.prefix_length = rows, budget, keys[0].shape[2]
        self.length = self.prefix_length + budget
        self.eos, self.filler = lm.eos_token_id, 1 if getattr(lm.tokenizer, "pad_token_id", None) == 0 else 0
        self.tables = padded_word_tables(lm.tokenizer, model.get_output_embeddings().weight.shape[0], device)
        self.cache_name = cache_argument(model)
        self.tokens_in = torch.full((rows,), self.filler, dtype=torch.long, device=device)  # (B,)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)  # (B,)
        self.cache = Cache(layers=[StaticPrefixLayer(rows, k.shape[1], self.length, k.shape[3], k, self.positions)
                                   for k in keys])
        self.key_positions = torch.arange(self.length, device=device)  # (L,)
        self.open = torch.zeros((), dtype=dtype, device=device)
        self.shut = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
        self.capacities = [rows] * len(CANDIDATES)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_error: str | None = None
        self.logits: Tensor | None = None  # (B, V): the graph's output, else the last eager step's
        if graph:
            self._capture(model)

    def forward(self, model: nn.Module) -> Tensor:
        """One step of every row: token ``tokens_in`` (B,) at ``positions`` (B,) → next-token logits (B, V).

        This is what a CUDA graph captures: fixed shapes, buffers written in
        place, no host sync. Row b attends to its positions up to its own.
        """
        visible = self.key_positions[None, :] <= self.positions[:, None]  # (B, L)
        mask = torch.where(visible, self.open, self.shut)[:, None, None, :]  # (B, 1, 1, L)
        out = model(input_ids=self.tokens_in[:, None], position_ids=self.positions[:, None], attention_mask=mask,
                    use_cache=True, **{self.cache_name: self.cache})
        return out.logits[:, -1]  # (B, V)

    def _capture(self, model: nn.Module) -> None:
        """Capture :meth:`forward` as a CUDA graph, after warm-up steps on a side stream."""
        stream = torch.cuda.Stream(self.positions.device)
        stream.wait_stream(torch.cuda.current_stream(self.positions.device))
        try:
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_STEPS):
                    self.forward(model)
            torch.cuda.current_stream(self.positions.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.logits = self.forward(model)
            self.graph = graph
        except RuntimeError as exc:
            self.graph_error = first_line(exc)
            self.logits = None
            log.warning("sampling: the decode step could not be captured as a CUDA graph (%s); it runs eagerly",
                        self.graph_error)

    def _step(self, model: nn.Module) -> Tensor:
        """Run one step: replay the graph, or the same function eagerly."""
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        self.logits = self.forward(model)
        return self.logits

    def decode(self, model: nn.Module, keys: Sequence[Tensor], values: Sequence[Tensor], first_logits: Tensor,
               image: Sequence[int], uniforms: Tensor, config: SamplingConfig) -> tuple[Tensor, Tensor]:
        """Sentences S after the prefixes (keys, values (n, H, P, hd) per layer; next-token logits (n, V)).

        ``image`` (S,) names each sentence's prefix, ``uniforms`` (S, budget)
        its random numbers. Returns tokens (S, budget) and lengths (S,),
        end-of-sentence excluded. A step where more rows needed more
        candidates than planned is drawn again, with room for all.
        """
        while True:
            done = _Run(self, model, keys, values, first_logits, image, uniforms, config).decode()
            if done is not None:
                return done
            log.debug("sampling: more rows needed a whole sort than planned; decoding the call again")
            self.capacities = [self.rows] * len(self.capacities)


class _Run:
    """One call through a :class:`StaticDecoder`: the state of its rows and of its S sentences, on the device.

    Per row: its sentence (S for an empty row: a spare sentence that takes
    what empty rows write), tokens drawn so far, words, whether no letter
    followed its last whitespace (``fresh``, :func:`~.word_boundaries.word_step`)
    and whether it is still writing. Per sentence: its tokens and length.
    """

    def __init__(self, decoder: StaticDecoder, model: nn.Module, keys: Sequence[Tensor], values: Sequence[Tensor],
                 first_logits: Tensor, image: Sequence[int], uniforms: Tensor, config: SamplingConfig):
        self.decoder, self.model, self.config = decoder, model, config
        self.keys, self.values, self.first_logits = keys, values, first_logits  # per layer (n, H, P, hd); (n, V)
        self.image = image
        rows, budget, device = decoder.rows, decoder.budget, first_logits.device
        self.spare = len(image)
        self.image_of = torch.tensor([*image, 0], device=device)  # (S + 1,)
        self.uniforms = torch.cat([uniforms, uniforms.new_zeros(1, budget)])  # (S + 1, budget)
        self.tokens = torch.full((self.spare + 1, budget), decoder.eos, dtype=torch.long, device=device)
        self.lengths = torch.zeros(self.spare + 1, dtype=torch.long, device=device)  # (S + 1,)
        self.sentence = torch.full((rows,), self.spare, dtype=torch.long, device=device)  # (B,)
        self.step = torch.zeros(rows, dtype=torch.long, device=device)  # (B,)
        self.words = torch.zeros(rows, dtype=torch.long, device=device)  # (B,)
        self.fresh = torch.ones(rows, dtype=torch.bool, device=device)  # (B,)
        self.alive = torch.zeros(rows, dtype=torch.bool, device=device)  # (B,)
        self.busiest = torch.zeros(len(decoder.capacities), dtype=torch.long, device=device)  # (tiers,)
        if decoder.logits is None:
            decoder.logits = first_logits.new_zeros((rows, first_logits.shape[1]), dtype=keys[0].dtype)
        self.logits = decoder.logits  # (B, V)
        self.started = 0

    def decode(self) -> tuple[Tensor, Tensor] | None:
        """Run until every sentence has ended; tokens (S, budget) and lengths (S,), or None if a step overflowed."""
        decoder = self.decoder
        free = list(range(decoder.rows))
        while True:
            self._start(free)
            for _ in range(CHECK_EVERY):
                self._draw()
                self.logits = decoder._step(self.model)
            capacities = torch.tensor(decoder.capacities, device=self.busiest.device)
            seen = torch.cat([self.alive.long(), (self.busiest > capacities).long(), self.busiest]).tolist()
            alive, overflow, busiest = seen[: decoder.rows], seen[decoder.rows : -len(capacities)], seen[-len(capacities) :]
            if any(overflow):
                return None
            free = [row for row, live in enumerate(alive) if not live]
            if self.started == self.spare and len(free) == decoder.rows:
                break
        decoder.capacities = [min(decoder.rows, math.ceil(CAPACITY_MARGIN * n) + 8) for n in busiest]
        return self.tokens[: self.spare], self.lengths[: self.spare]

    def _start(self, free: list[int]) -> None:
        """Give the next sentences to free rows: their image's prefix cache and first logits, counters at zero."""
        count = min(len(free), self.spare - self.started)
        if count == 0:
            return
        device = self.sentence.device
        rows = torch.tensor(free[:count], device=device)  # (m,)
        sentences = torch.arange(self.started, self.started + count, device=device)  # (m,)
        images = self.image_of[sentences]  # (m,)
        self.started += count
        self.sentence[rows] = sentences
        self.step[rows] = 0
        self.words[rows] = 0
        self.fresh[rows] = True
        self.alive[rows] = True
        for layer, k, v in zip(self.decoder.cache.layers, self.keys, self.values):
            layer.start(rows, k[images], v[images])
        self.logits[rows] = self.first_logits[images].to(self.logits.dtype)

    def _draw(self) -> None:
        """Draw every live row's next token and set the next step's inputs, all on the device.

        As the eager decoder: temperature, end-of-sentence forbidden before
        ``min_words`` words, the nucleus draw; a sentence ends at its
        end-of-sentence token, where its ``max_words + 1``-th word would begin,
        or at the token budget.
        """
        decoder, config = self.decoder, self.config
        logits = self.logits.float() / config.temperature  # (B, V)
        logits[:, decoder.eos] = torch.where(self.words < config.min_words, float("-inf"), logits[:, decoder.eos])
        probs = torch.softmax(logits, dim=-1)  # (B, V)
        at = self.step.clamp(max=decoder.budget - 1)  # (B,)
        token, passed = fast_nucleus(probs, config.top_p, self.uniforms[self.sentence, at], CANDIDATES,
                                     decoder.capacities, self.alive)  # (B,), (tiers,)
        torch.maximum(self.busiest, passed, out=self.busiest)
        new_word, fresh = word_step(token, self.fresh, decoder.tables)  # (B,), (B,)
        stop = (token == decoder.eos) | (new_word & (self.words >= config.max_words))  # (B,)
        write = self.alive & ~stop  # (B,)
        ends = self.alive & (stop | (self.step + 1 >= decoder.budget))  # (B,)
        self.tokens[torch.where(write, self.sentence, self.spare), at] = token
        self.lengths[torch.where(ends, self.sentence, self.spare)] = torch.where(stop, self.step, self.step + 1)
        self.words += new_word & write
        self.fresh = torch.where(self.alive, fresh, self.fresh)
        self.step += write
        self.alive &= ~ends
        decoder.tokens_in.copy_(torch.where(self.alive, token, decoder.filler))
        decoder.positions.copy_(decoder.prefix_length + self.step - 1)
