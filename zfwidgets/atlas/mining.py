"""Streaming top-k per feature map over a dataset: the paper's Fig. 2, at any scale.

docs/method.md Sec. 3.1 (the paper's Fig. 2): for a feature map, the 9 strongest activations
over a whole dataset, shown as deconvnet projections cropped to the unit's receptive field
beside the same crops of the input images. Each image counts once per feature map, with its
spatial maximum.

How it scales:

- **One pass that stops early.** Every requested layer is reduced inside its forward hook, on
  the model's device, to (B, C) spatial maxima; positions are searched only in maps that may
  enter the top-k (:class:`TopK`); the forward pass ends right after the last call of the
  deepest requested layer (the rest of the network never runs). The running top-k is merged on
  the device; nothing is copied to the host per batch.
- **Fixed chunks.** The work is cut into chunks of ``chunk_size`` consecutive global image
  indices, the unit of checkpointing and of distribution. The default size depends on the
  data size only, never on the number of processes (:func:`default_chunk_size`): more than
  128 chunks, so every rank of any job up to 128 ranks gets work. Each rank takes a
  contiguous, balanced share of the chunks and batches its images across chunk ends (full
  batches whatever the chunk size); each image's maxima do not depend on which batch holds it,
  so the atlas is the same however the chunks are spread over processes or resumed.
- **Resumable.** With ``checkpoint=``, every finished chunk is committed to disk atomically
  (:mod:`zfwidgets.atlas.resume`); calling again skips committed chunks.
- **Distributed.** Under ``torchrun``, ranks take disjoint chunks; an all-gather of fixed-shape
  tensors and a merge ordered by (value descending, global index ascending) give every rank the
  same atlas, equal to a single-process run.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..base.checks import check_callable, check_model, check_positive_int, model_device
from ..base.layers import eval_mode, resolve_layers
from ..base.progress import Progress, ProgressArg, check_progress
from ..base.source import ImageSource
from ..engine.capture import Capture
from ..engine.probe import check_images, check_input_size, dry_run
from . import distributed
from .core import Atlas
from .resume import Checkpoint, job_description, model_description, saved_chunk_size

__all__ = [
    "mine",
    "TopK",
    "UnreadableImage",
    "merge_topk",
    "DEFAULT_CHUNK_SIZE",
    "default_chunk_size",
]

#: The largest chunk :func:`default_chunk_size` picks (images; once the fixed default).
DEFAULT_CHUNK_SIZE = 8192
#: The default cuts the data into about this many chunks (at least half of it, see below).
TARGET_CHUNKS = 256


def default_chunk_size(n: int) -> int:
    """Images per chunk when ``mine`` is not given ``chunk_size``: a function of the data size
    ``n`` only, never of the number of processes.

    ``ceil(n / 256)`` rounded up to a power of two, at most :data:`DEFAULT_CHUNK_SIZE` (8,192):

    - **Every rank gets work.** Up to 2.1M images there are more than 128 chunks (one image per
      chunk below 257 images), so every rank of a job of up to 128 ranks (and at most ``n``)
      mines, and ranks differ by at most one chunk. Above that, chunks of 8,192 images are
      more than 256. ImageNet-val (50,000) gets 196 chunks of 256 images; 1,280 images 160 of 8.
    - **The same atlas for any world size.** As the layout ignores the world size, a job run on
      N ranks, resumed on M or run in one process commits the same chunks and gives the
      identical atlas.
    - **Full batches.** Batches run across chunk ends within a rank's share, so small chunks
      never mean small batches; a power of two is a multiple of the usual power-of-two batch
      sizes (or smaller than them), so batch ends fall on chunk ends and commits are frequent.
    - **Cheap checkpoints.** A checkpoint rewrites one small part file when a batch ends on a
      chunk end: at most once per batch, and at most a few hundred times per job beyond
      65,536 images.
    """
    target = max(1, -(-int(n) // TARGET_CHUNKS))
    return min(DEFAULT_CHUNK_SIZE, 1 << (target - 1).bit_length())


class UnreadableImage(Exception):
    """Raised by a dataset's ``__getitem__`` for an image it cannot read (a corrupt file).

    :func:`mine` skips such images, counts them, never places them in the atlas and reports
    them in ``atlas.provenance["skipped"]``; any other exception stops the run.
    """


def merge_topk(
    values: torch.Tensor, indices: torch.Tensor, positions: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k best of (C, M) candidates: value descending, then global index ascending.

    Two stable sorts, so the order never depends on ``topk``'s unspecified order among ties
    (which differs between CPU and CUDA). Padding entries (value -inf, index -1) sort last.
    """
    by_index = torch.sort(indices, dim=1, stable=True).indices
    v = torch.gather(values, 1, by_index)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    order = torch.gather(by_index, 1, order)
    return (
        torch.gather(values, 1, order),
        torch.gather(indices, 1, order),
        torch.gather(positions, 1, order.unsqueeze(-1).expand(-1, -1, 2)),
    )


class _Candidates(NamedTuple):
    """What :meth:`TopK.offer` keeps of one output on the CPU: the M maps that may enter the
    top-k, the rest of the work (their maxima's positions, the merge) left to
    :meth:`TopK.accept`."""

    enter: torch.Tensor  # (B, C) bool: the maps that may enter
    rows: torch.Tensor  # (M,) their flat indices in (B, C), ascending
    found: torch.Tensor  # their (M, H, W) maps, or their (M,) maxima
    flat: torch.Tensor | None  # with maxima of (B, C, H, W): their (M,) row-major positions
    start: int | torch.Tensor
    width: int  # the maps' W
    scores: torch.Tensor  # (B, C) every map's maximum


class TopK:
    """Running top-k of (C,) scores per batch, strongest first; ties go to the lower index."""

    #: How :meth:`offer` searches positions. True: only in the maps whose maximum beats the
    #: k-th greatest maximum seen in their channel, copied in the hook, then searched and
    #: merged several batches at once (few maps once k images are seen; their number is
    #: data-dependent, which costs a device synchronisation off the CPU). False: in k maps per
    #: channel, merged every batch (a fixed shape, no synchronisation). None: the former on the
    #: CPU. Both give the same entries.
    compact: bool | None = None

    def __init__(self, channels: int, k: int, device: torch.device, dtype=torch.float32):
        self.k = k
        self._values = torch.full((channels, k), float("-inf"), device=device, dtype=dtype)
        self._indices = torch.full((channels, k), -1, device=device, dtype=torch.long)
        self._positions = torch.zeros((channels, k, 2), device=device, dtype=torch.long)
        # (flat indices in (B, C), maxima, flat positions or None, map width, global indices)
        # of each batch's candidates
        self._queue: list[tuple] = []
        self._queued = 0
        # the k greatest maxima seen (the entries' values, queued candidates included) and the
        # least of them, which a map must beat to enter
        self._best = self._values
        self._threshold = self._values[:, -1].contiguous()
        self._seen = 0  # images seen: until k, every map may enter
        self._scratch: dict = {}  # rows reused by _spatial_amax from batch to batch

    def update(
        self, values: torch.Tensor, positions: torch.Tensor, start: int | torch.Tensor
    ) -> None:
        """values (B, C), positions (B, C, 2) for images ``start .. start + B - 1``, or for the
        global indices ``start`` (a (B,) long tensor, increasing, all above those seen so far)."""
        self._flush()
        v, order, fresh, b = self._select(values.t().to(self._values.dtype))
        p = torch.cat([self._positions, positions.transpose(0, 1)], 1)
        self._commit(
            order,
            fresh,
            torch.gather(v, 1, order),
            torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, 2)),
            self._global(start, values),
        )

    def add(self, out: torch.Tensor, start: int | torch.Tensor) -> None:
        """``update`` with a layer's output: see :meth:`offer`."""
        self.accept(self.offer(out, start))

    def offer(self, out: torch.Tensor, start: int | torch.Tensor) -> tuple:
        """What a layer's output brings to the top-k, without changing it (:meth:`accept` does):
        (B, C, H, W) scored by each map's spatial maximum at its first position in row-major
        order, (B, C) scored as it is at position (0, 0); ``start`` as in :meth:`update`.

        The same result as ``update`` with the values and positions of ``out.flatten(2).max(2)``
        for less work: the maxima are found without their positions (a vectorised pass), then
        positions are searched only in the maps that may enter the top-k. Call it while ``out``
        is fresh (in a forward hook): it reads ``out`` and keeps at most copies of the maps that
        may enter.
        """
        if out.requires_grad:
            out = out.detach()
        if self.compact if self.compact is not None else out.is_cpu:
            return self._candidates(out, start)
        scores = _spatial_amax(out) if out.dim() == 4 else out
        v, order, fresh, b = self._select(scores.t().to(self._values.dtype))
        if out.dim() == 2 or out.shape[0] == 0:  # (B, C), or an empty batch: nothing enters
            zeros = torch.zeros(b.shape + (2,), dtype=torch.long, device=out.device)
            return order, fresh, torch.gather(v, 1, order), zeros, self._global(start, out)
        B, C, _, w = out.shape
        if self.k >= B:  # no more maps in the batch than entries kept: search them all
            best, flat = out.flatten(2).max(2)
            best, flat = torch.gather(best.t(), 1, b), torch.gather(flat.t(), 1, b)
        else:  # the maps that may enter, a fixed number: (C, k, H, W)
            planes = out[b, torch.arange(C, device=out.device).unsqueeze(1)]
            best, flat = planes.flatten(2).max(2)
        positions = torch.stack([flat // w, flat % w], -1)
        return order, fresh, best.to(self._values.dtype), positions, self._global(start, out)

    def _candidates(self, out: torch.Tensor, start: int | torch.Tensor) -> _Candidates:
        """The maps that may enter: those whose maximum is not at or below the k-th greatest
        maximum seen in their channel (NaN is above every value). The entries only grow, so a
        map below it now never enters later; the queue is merged before the entries are read.
        Until k images are seen, the bound is the batch's own k-th greatest maximum: a map
        below it has k maps of its batch before it.

        Only what needs ``out`` runs here, in the hook, between the network's own operations
        (where every operation starts cold): the maxima, the choice, a copy of the chosen maps.
        The rest runs in :meth:`accept`, after the forward, for all layers in a row."""
        # few Python operations: the caches are cold after the network's own operation, so
        # each costs several microseconds here (BENCHMARKS.md, issue 19 item 6, fourth stop)
        if self._seen >= self.k and out.dim() == 4:  # the usual case
            scores = _spatial_amax(out, self._scratch)
            enter = scores.le(self._threshold).logical_not_()
            rows = _rows(enter)
            return _Candidates(
                enter, rows, _chosen_maps(out, rows), None, start, out.shape[3], scores
            )
        if out.dim() == 2:
            enter = out.le(self._threshold).logical_not_()
            rows = _rows(enter)
            return _Candidates(enter, rows, out.reshape(-1)[rows], None, start, 1, out)
        if self._seen < self.k and out.shape[0] <= self.k:  # every map may enter
            scores, flat = out.flatten(2).max(2)
            enter = scores.le(self._threshold).logical_not_()
            rows = _rows(enter)
            found, flat = scores.view(-1)[rows], flat.view(-1)[rows]
            return _Candidates(enter, rows, found, flat, start, out.shape[3], scores)
        scores = _spatial_amax(out, self._scratch)
        kth = torch.topk(scores, self.k, dim=0).values[-1]
        enter = scores.lt(kth).logical_not_()
        rows = _rows(enter)
        return _Candidates(enter, rows, _chosen_maps(out, rows), None, start, out.shape[3], scores)

    def accept(self, offer: tuple) -> None:
        """Merge what :meth:`offer` computed (against the entries as they are now)."""
        accept_all([self], [offer])

    def _enqueue(self, offer: _Candidates) -> None:
        # the maxima's flat positions now, so that the queue holds no maps; rows and columns
        # are found once per merge
        found, flat = offer.found, offer.flat
        if found.dim() == 3:
            found, flat = found.flatten(1).max(1)
        self._seen += offer.scores.shape[0]
        if found.shape[0]:  # a batch with no candidate leaves nothing to merge
            images = self._global(offer.start, offer.scores)
            self._queue.append((offer.rows, found, flat, offer.width, images))
            self._queued += found.shape[0]

    def _flush(self) -> None:
        """Merge the queued candidates, all batches at once: their maxima and positions laid
        out (C, most per channel) in arrival order (that is, by global index) and padded with
        -inf after them, then the k best of [entries | candidates] per channel as
        :meth:`_select` finds them."""
        if not self._queue:
            return
        queue, self._queue, self._queued = self._queue, [], 0
        C, k = self._values.shape
        flat_rows, found, images = (torch.cat([q[j] for q in queue]) for j in (0, 1, 4))
        positions = _positions(queue)
        # each candidate's image (its row in the queued batches' images laid end to end) and
        # channel: by image, then channel, which is the arrival order
        rows, cols = flat_rows.div(C, rounding_mode="floor"), flat_rows.remainder(C)
        if len(queue) > 1:
            starts = torch.tensor([0] + [q[4].shape[0] for q in queue[:-1]]).cumsum(0)
            counts = torch.tensor([q[0].shape[0] for q in queue])
            rows += torch.repeat_interleave(starts, counts).to(rows.device)
        order = torch.sort(cols, stable=True).indices  # by channel, in arrival order
        channels = cols[order]
        counts = torch.bincount(channels, minlength=C)
        col = torch.arange(channels.numel(), device=channels.device)
        col -= (counts.cumsum(0) - counts)[channels]
        width = int(counts.max()) if channels.numel() else 0
        like = self._values
        v = torch.full((C, width), float("-inf"), device=like.device, dtype=like.dtype)
        i = torch.full((C, width), -1, device=like.device, dtype=torch.long)
        p = torch.zeros((C, width, 2), device=like.device, dtype=torch.long)
        v[channels, col] = found[order].to(like.dtype)
        i[channels, col] = images[rows[order]]
        p[channels, col] = positions[order]
        v, best, _, _ = self._select(v)  # padding: -inf after every real entry, never chosen
        self._values = torch.gather(v, 1, best)
        self._indices = torch.gather(torch.cat([self._indices, i], 1), 1, best)
        p = torch.cat([self._positions, p], 1)
        self._positions = torch.gather(p, 1, best.unsqueeze(-1).expand(-1, -1, 2))

    def _global(self, start: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if isinstance(start, torch.Tensor):
            return start.to(like.device)
        return torch.arange(start, start + like.shape[0], device=like.device)

    def _select(self, scores: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The k best of the running entries and the batch's (C, B) scores, as a stable
        descending sort of ``v`` = [running | batch] would order them: ``order`` (C, k) their
        columns in ``v``, ``fresh`` which come from the batch, ``b`` their image in the batch
        (0 where not)."""
        v = torch.cat([self._values, scores], 1)
        k = self.k
        if v.dtype == torch.float32:
            order = torch.topk(_sort_keys(v), k, dim=1).indices
        else:
            order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
        fresh = order >= k
        return v, order, fresh, (order - k).clamp_(min=0)

    def _commit(
        self,
        order: torch.Tensor,
        fresh: torch.Tensor,
        values: torch.Tensor,
        positions: torch.Tensor,
        indices: torch.Tensor,
    ) -> None:
        """The new running entries: ``values`` (C, k), ``positions`` (C, k, 2) where fresh."""
        old = order.clamp(max=self.k - 1)
        i = torch.cat([self._indices, indices.expand(order.shape[0], -1)], 1)
        self._values = torch.where(fresh, values, torch.gather(self._values, 1, old))
        self._best = self._values
        self._threshold = self._values[:, -1].contiguous()
        self._seen += indices.shape[-1]
        self._indices = torch.gather(i, 1, order)
        self._positions = torch.where(
            fresh.unsqueeze(-1),
            positions,
            torch.gather(self._positions, 1, old.unsqueeze(-1).expand(-1, -1, 2)),
        )

    def state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values, indices, positions): (C, k), (C, k), (C, k, 2), strongest first."""
        self._flush()
        return self._values, self._indices, self._positions

    @property
    def values(self) -> torch.Tensor:
        return self.state()[0]

    @property
    def indices(self) -> torch.Tensor:
        return self.state()[1]

    @property
    def positions(self) -> torch.Tensor:
        return self.state()[2]


def accept_all(tops: list[TopK], offers: list[tuple]) -> None:
    """``top.accept(offer)`` for each pair: what :meth:`TopK.offer` computed for each top-k in
    one forward. The CPU path's bounds (the k greatest maxima seen per channel) are raised in
    one ``topk`` over the channels of all of them (few operations per batch, not per layer).

    Only the maps that entered can change the k greatest maxima: the others are at or below
    the least of them, or, before k images were seen, below k maxima of their own batch. They
    are masked with -inf, which leaves the values unchanged and makes topk's comparisons on
    rows of mostly -inf predict well (3 to 4 times faster than on every maximum)."""
    compact = [(t, o) for t, o in zip(tops, offers) if isinstance(o, _Candidates)]
    for t, o in zip(tops, offers):
        if not isinstance(o, _Candidates):
            t._flush()
            t._commit(*o)
    groups: dict[tuple, list[tuple[TopK, _Candidates]]] = {}
    for t, o in compact:
        t._enqueue(o)
        groups.setdefault((t.k, t._best.dtype, o.scores.shape[0]), []).append((t, o))
    for (k, dtype, _), pairs in groups.items():
        enter = torch.cat([o.enter for _, o in pairs], 1)
        scores = torch.cat([o.scores.to(dtype) for _, o in pairs], 1)
        best = torch.cat([t._best for t, _ in pairs]) if len(pairs) > 1 else pairs[0][0]._best
        seen = torch.cat([best, torch.where(enter, scores, float("-inf")).t()], 1)
        best = torch.topk(seen, k, dim=1).values  # NaN first, as in the order
        threshold = best[:, -1].contiguous()
        row = 0
        for t, _ in pairs:
            c = t._values.shape[0]
            t._best, t._threshold = best[row : row + c], threshold[row : row + c]
            row += c
    for t, _ in compact:
        # a bounded queue: in candidates, and in batches (each keeps its (B,) global indices)
        if t._queued >= 16 * t._values.numel() or len(t._queue) >= 256:
            t._flush()


def _rows(enter: torch.Tensor) -> torch.Tensor:
    """(B, C) bool -> (M,) the flat indices of its True entries, ascending."""
    return enter.reshape(-1).nonzero().view(-1)


def _chosen_maps(out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The (M, H, W) maps of (B, C, H, W) ``out`` at the flat (B, C) indices ``rows``. A
    contiguous ``out`` is read with ``index_select`` of its rows (about a third faster on the
    CPU than the boolean index); other layouts by image and channel."""
    if out.is_contiguous():
        return out.flatten(0, 1).index_select(0, rows)
    C = out.shape[1]
    return out[rows.div(C, rounding_mode="floor"), rows.remainder(C)]


def _positions(queue: list[tuple]) -> torch.Tensor:
    """(M, 2) ``(y, x)`` of the queued candidates: (flat indices, maxima, flat positions or None
    for (B, C) outputs, map width, global indices) per batch; one division for all when the
    widths agree."""
    flats, widths = [], []
    for _, found, flat, width, _ in queue:
        if flat is None:  # an output (B, C): position (0, 0)
            flat, width = torch.zeros_like(found, dtype=torch.long), 1
        flats.append(flat)
        widths.append(width)
    flat = torch.cat(flats)
    if len(set(widths)) == 1:
        w: int | torch.Tensor = widths[0]
    else:
        counts = torch.tensor([f.shape[0] for f in flats], device=flat.device)
        w = torch.tensor(widths, device=flat.device).repeat_interleave(counts)
    return torch.stack([flat // w, flat % w], -1)


def _spatial_amax(out: torch.Tensor, scratch: dict | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) maxima (NaN where a map holds one): ``out.amax((2, 3))``.

    On the CPU, torch reduces contiguous rows of n elements in vectors, then the remainder
    one element at a time, so maps whose n leaves a long remainder (or is below 32) cost it far
    more per element than the others. A contiguous output's maps are reduced instead as below,
    1.2 to 3.7 times faster for those sizes, the same for the others (1 or 2 threads on the
    2-core benchmark machine: ``python benchmarks/bench_mining.py --only rows``, figures in
    BENCHMARKS.md):

    - 12 to 19 elements: halving, with elementwise ``maximum`` (which propagates NaN);
    - 20 to 31 (5x5 maps: AlexNet at 96 px, ResNet at 160 px): copied into rows of 32 whose
      last columns hold -inf (``scratch``: a dict kept by the caller across batches, so the
      rows are allocated and filled once);
    - 40 to 63 with a remainder of 8 or more (7x7 maps): the elementwise ``maximum`` of the
      first and the last 32 elements, which overlap and cover the row, then rows of 32;
    - 64 to 255 with a remainder of 16 or more (9x9, 11x11 maps): the greatest of the maxima
      of the first multiple of 32 elements and of the last 32.

    Longer rows (23x23, 27x27 maps) are left to ``amax``: alone the last way is faster for them
    too, but inside a forward, where the output is read for the first time, its second pass
    cost more than it saved (``python benchmarks/bench_mining.py --only rows`` times both).

    ``maximum`` and ``amax`` are exact and propagate NaN, so each way gives ``amax``'s maxima."""
    shape = out.shape
    n = shape[2] * shape[3]
    if (
        n < 12
        or n >= 256
        or (32 <= n < 64 and n % 32 < 8)
        or (n >= 64 and n % 32 < 16)
        or not out.is_cpu
        or not out.is_contiguous()
        or not out.is_floating_point()
    ):  # few Python operations first: in a forward hook each costs several microseconds
        return out.amax((2, 3))
    B, C = shape[0], shape[1]
    rows = out.view(B * C, n)
    if n < 20:
        return _halving_max(rows).view(B, C)
    if n < 32:
        key = (B * C, n, out.dtype)
        padded = None if scratch is None else scratch.get(key)
        if padded is None:
            padded = torch.full((B * C, 32), float("-inf"), dtype=out.dtype)
            if scratch is not None:
                scratch.clear()  # one shape at a time: the last batch may be smaller
                scratch[key] = padded
        padded[:, :n] = rows
        return padded.amax(1).view(B, C)
    if n < 64:
        return torch.maximum(rows[:, :32], rows[:, n - 32 :]).amax(1).view(B, C)
    return _blocks_max(rows).view(B, C)


def _blocks_max(rows: torch.Tensor) -> torch.Tensor:
    """(M, n >= 32) -> (M,) maxima: of the first multiple of 32 elements and of the last 32."""
    n = rows.shape[1]
    return torch.maximum(rows[:, : n // 32 * 32].amax(1), rows[:, n - 32 :].amax(1))


def _halving_max(rows: torch.Tensor) -> torch.Tensor:
    """(M, n) -> (M,) maxima by halving the rows with elementwise ``maximum``."""
    n = rows.shape[1]
    m = torch.maximum(rows[:, : n // 2], rows[:, n // 2 : n // 2 * 2])
    if n % 2:
        m[:, 0] = torch.maximum(m[:, 0], rows[:, -1])
    while m.shape[1] > 1:
        h = m.shape[1] // 2
        last = m[:, -1] if m.shape[1] % 2 else None
        m = torch.maximum(m[:, :h], m[:, h : 2 * h])
        if last is not None:
            m[:, 0] = torch.maximum(m[:, 0], last)
    return m[:, 0]


def _sort_keys(v: torch.Tensor) -> torch.Tensor:
    """(C, M) float32 -> (C, M) int64 keys, distinct within a row, whose descending order is
    the order of ``torch.sort(v, dim=1, descending=True, stable=True)``: greater values first
    (NaN above all, -0.0 equal to 0.0), then the lower column. ``topk`` of distinct keys has no
    ties to order, so it agrees with the stable sort on every device, for less work."""
    v = torch.where(v == 0, 0.0, v)  # -0.0 ties with 0.0, as in the sort
    bits = v.view(torch.int32)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # an int32 in the order of the floats
    key = torch.where(torch.isnan(v), torch.iinfo(torch.int32).max, key)
    M = v.shape[1]
    tie = torch.arange(M - 1, -1, -1, device=v.device)  # the lower column wins
    return (key.long() << 32) + tie


# -- the plan: what the forward calls, where it can stop ----------------------------------------
def _trace(model: nn.Module, names: list[str], x: torch.Tensor):
    """The order of the requested layers' calls in one forward of ``x``'s shape, their outputs'
    shapes, and the call after which the forward can stop: from the shape-only pass on the
    meta device that the input checks use (:func:`~zfwidgets.engine.probe.dry_run`, made
    afresh: no data, the model untouched), or, for a model that cannot run on meta before the
    last requested layer, from one real forward of the image ``x``."""
    run = dry_run(model, tuple(x.shape), layers=tuple(names), dtype=x.dtype, cached=False)
    if all(n in run.shapes and run.calls.get(n) for n in names):
        # a pass that fails after them fails there on the real forward too, which never
        # runs that far while mining
        wanted = set(names)
        last = [n for n in run.order if n in wanted][-1]
        shapes = {n: run.shapes[n] for n in names}
        stop = (last, run.calls[last] - 1)
    else:
        stop, shapes = _real_trace(model, names, x)
    for n in names:
        if len(shapes[n]) not in (2, 4):
            raise ValueError(
                f"layers: {n!r} outputs shape {shapes[n]}; mining needs (B, C, H, W) or (B, C)"
            )
    return stop, {n: shapes[n][1] for n in names}, {n: len(shapes[n]) == 4 for n in names}


def _real_trace(model: nn.Module, names: list[str], x: torch.Tensor):
    """:func:`_trace` by one real forward of ``x``: the stop and the outputs' shapes."""
    events: list[str] = []
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, out: torch.Tensor):
        events.append(name)
        shapes[name] = tuple(out.shape)

    try:
        with (
            eval_mode(model),
            torch.no_grad(),
            Capture(model, names, switches=False, reduce=record),
        ):
            model(x)
    except Exception:
        # The part of the network after the requested layers (a classifier with a fixed input
        # size, say) never runs while mining; only a failure before them is the user's error.
        if set(names) - set(events):
            check_input_size(model, tuple(x.shape), name="data")  # names the sizes it takes
            raise
    missing = [n for n in names if n not in shapes]
    if missing:
        raise ValueError(
            f"layers: {missing} are never called by the model's forward pass, so they have no "
            "activations to mine; pass layers the forward uses"
        )
    last = events[-1]
    return (last, events.count(last) - 1), shapes


def _data_fingerprint(source: ImageSource, first: torch.Tensor) -> str:
    """Cheap identity of the data, reading nothing more: its size and kind and a hash of its
    first image (or the dataset's own ``fingerprint()``, as
    :class:`zfwidgets.atlas.folder.ImageFolder` gives: a hash of its file names and sizes)."""
    items = source.items
    own = getattr(items, "fingerprint", None)
    if callable(own):
        return str(own())
    h = hashlib.sha256(f"{type(items).__name__}:{len(source)}".encode())
    h.update(first.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


# -- batches -------------------------------------------------------------------------------------
class _Indexed(torch.utils.data.Dataset):
    """(global index, image or None when unreadable) for the DataLoader's workers."""

    def __init__(self, source: ImageSource):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            return i, self.source.get(i)
        except UnreadableImage:
            return i, None


def _collate(items: list) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    good = [(i, x) for i, x in items if x is not None]
    skipped = [i for i, x in items if x is None]
    if not good:
        return torch.empty(0, dtype=torch.long), None, skipped
    shapes = {tuple(x.shape) for _, x in good}
    if len(shapes) > 1:
        first = tuple(good[0][1].shape)
        odd = next(i for i, x in good if tuple(x.shape) != first)
        raise ValueError(
            f"data: images must share one size to be batched; image {good[0][0]} has shape "
            f"{first}, image {odd} has {sorted(shapes - {first})[0]} (resize them with a transform)"
        )
    return torch.tensor([i for i, _ in good]), torch.stack([x for _, x in good]), skipped


def _share(todo: list[int], rank: int, world: int) -> list[int]:
    """The chunks of ``rank``: a contiguous, balanced slice of ``todo`` (sizes differ by at most
    one chunk), so that each rank's images form as few runs as possible."""
    m = len(todo)
    return todo[rank * m // world : (rank + 1) * m // world]


def _plan(
    chunks: list[int], n: int, chunk_size: int, batch_size: int
) -> list[tuple[int, int, list[int]]]:
    """(start, end, chunks finished) of every batch, in order.

    Consecutive chunks form one run of images, cut into batches of ``batch_size`` from the
    run's start: a batch may straddle chunks, so small chunks do not make small batches. A run's
    last batch is never a single image when the run has more (some kernels compute a batch of
    one with other rounding). A batch lists the chunks it finishes only when it ends on a chunk
    boundary: the images mined then are exactly those of the finished chunks, which is what a
    checkpoint may commit.
    """
    runs: list[list[int]] = []
    for c in chunks:
        if runs and runs[-1][-1] + 1 == c:
            runs[-1].append(c)
        else:
            runs.append([c])
    out: list[tuple[int, int, list[int]]] = []
    for run in runs:
        lo, hi = run[0] * chunk_size, min(n, (run[-1] + 1) * chunk_size)
        cuts = list(range(lo, hi, batch_size)) + [hi]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] == 1 and batch_size > 2:
            cuts[-2] -= 1  # ..., B - 1, 2 rather than ..., B, 1
        pending = list(run)
        for s, e in zip(cuts, cuts[1:]):
            finished: list[int] = []
            if e == hi or e % chunk_size == 0:
                while pending and min(n, (pending[0] + 1) * chunk_size) <= e:
                    finished.append(pending.pop(0))
            out.append((s, e, finished))
    return out


def _batches(
    source: ImageSource,
    plan: list[tuple[int, int, int]],
    *,
    num_workers: int,
    pin_memory: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, list[int]]]:
    if source.is_tensor:
        data = source.items
        for s, e, _ in plan:
            yield torch.arange(s, e), data[s:e], []
        return
    loader = DataLoader(
        _Indexed(source),
        batch_sampler=[list(range(s, e)) for s, e, _ in plan],
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=_collate,
        persistent_workers=False,
    )
    yield from loader


# -- the job -------------------------------------------------------------------------------------
def mine(
    model: nn.Module,
    data: Any,
    *,
    layers: Iterable[str | nn.Module] | str | nn.Module,
    k: int = 9,
    batch_size: int = 64,
    transform: Callable | None = None,
    progress: ProgressArg = True,
    num_workers: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    chunk_size: int | None = None,
) -> Atlas:
    """The k strongest activations of every feature map of ``layers`` over ``data``.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode on its own device; every module's ``training`` flag is restored. The
        forward pass stops after the deepest requested layer.
    data : Tensor (N, C, H, W), Dataset, DataLoader, or list of tensors / PIL images
        Datasets may return tensors or ``(tensor, label)``; PIL images need ``transform``.
        A DataLoader must iterate in a fixed order (``shuffle=False``); its dataset, batch size,
        workers and pinned memory are used. A dataset may raise :class:`UnreadableImage` for an
        item it cannot read: that image is skipped and reported, the run goes on.
    layers : names or modules
        Dotted ``named_modules()`` names. Outputs (B, C, H, W) or (B, C).
    k : int
        Hits kept per feature map (the paper's 9).
    batch_size : int
        Images per forward pass (a DataLoader's own batch size wins).
    transform : callable, optional
        Applied to each item (PIL image or tensor) of a Dataset or list.
    progress : bool or callable
        ``True``: a ``tqdm.auto`` bar (images/s); a callable ``progress(done, total)`` is
        called after each batch and may raise (e.g. :class:`zfwidgets.base.progress.Cancelled`)
        to stop the work.
    num_workers : int, optional
        DataLoader worker processes reading a dataset (default 0, or the DataLoader's own).
        Memory is pinned when the model is on a CUDA device.
    checkpoint : path, optional
        A folder where every finished chunk is committed atomically; calling ``mine`` again
        with the same arguments skips them, so a killed run resumes where it stopped and gives
        exactly the atlas of an uninterrupted run. A folder holding another job (other model,
        parameters, data, layers, k, input size or chunk size) is refused with a ValueError.
    chunk_size : int, optional
        Images per chunk: the unit of checkpointing and of distribution over processes.
        Default: :func:`default_chunk_size` of the data size (``ceil(n / 256)`` rounded up to a
        power of two, at most 8,192), or, when ``checkpoint`` holds a job saved before, the
        chunk size it was written with (so its chunks resume as they were cut).

    Returns
    -------
    Atlas
        ``values[layer]`` (C, k), ``indices[layer]`` (C, k) dataset indices,
        ``positions[layer]`` (C, k, 2) ``(y, x)`` in the layer's output; strongest first, ties
        to the lower index. ``patches(layer, c)`` and ``reconstructions(layer, c)`` give the
        Fig. 2 crops; ``provenance`` describes the model, the data and the skipped images.

    Under ``torchrun`` (or with an initialised default process group), the chunks are spread
    over the ranks and every rank returns the same atlas.
    """
    check_model(model)
    named = resolve_layers(model, layers)
    names = list(dict.fromkeys(n for n, _ in named))
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, "chunk_size")
    transform = check_callable(transform, "transform")
    progress = check_progress(progress)
    if num_workers is not None and (
        isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0
    ):
        raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"checkpoint: expected a folder path (str or os.PathLike), got {type(checkpoint).__name__}"
        )
    loader = data if isinstance(data, DataLoader) else None
    source = ImageSource(data, transform=transform, batch_size=batch_size)
    if loader is not None:
        batch_size = loader.batch_size or batch_size
        if num_workers is None:
            num_workers = loader.num_workers
    num_workers = num_workers or 0
    n = len(source)
    if k > n:
        raise ValueError(f"k: expected at most the dataset size ({n} images), got k={k}")
    device = model_device(model)
    first, first_index = _first_readable(source)
    first = first.unsqueeze(0).to(device)
    # the network is cut after the deepest requested layer: its head need not take this size
    first = check_images(model, first, name=f"data[{first_index}]", size=False)
    input_size = tuple(first.shape[2:])
    stop, channels, spatial = _trace(model, names, first)

    ctx = distributed.context(device)
    model_info = model_description(model)
    data_info = {"n": n, "fingerprint": _data_fingerprint(source, first)}
    if chunk_size is None:
        chunk_size = default_chunk_size(n)
        if checkpoint is not None:  # a job saved before keeps the chunks it was cut into
            chunk_size = saved_chunk_size(checkpoint) or chunk_size
            if ctx.world > 1:  # rank 0's choice, whatever each rank's view of the folder
                ours = torch.tensor([chunk_size], dtype=torch.long)
                chunk_size = int(distributed.all_gather_cat(ours, 0)[0])
    num_chunks = -(-n // chunk_size)
    store = None
    previous = []
    if checkpoint is not None:
        job = job_description(
            model=model_info,
            data=data_info,
            layers=names,
            k=k,
            input_size=input_size,
            chunk_size=chunk_size,
        )
        store = Checkpoint(checkpoint, job, n=n, channels=channels, model=model)
        if ctx.is_main:
            store.prepare(write=True)
        ctx.barrier()
        if not ctx.is_main:
            store.prepare(write=False)
        previous = store.load_parts()
        ctx.barrier()  # every rank has listed the old parts before anyone writes a new one
    done = {c for p in previous for c in p.chunks}
    todo = [c for c in range(num_chunks) if c not in done]
    mine_chunks = _share(todo, ctx.rank, ctx.world)
    plan = _plan(mine_chunks, n, chunk_size, batch_size)
    session = _session_id(ctx)
    part_name = f"part-{session}-{ctx.rank}.safetensors"

    tops = {nm: TopK(channels[nm], k, device) for nm in names}
    pending: dict[str, tuple] = {}
    batch: list[torch.Tensor] = []  # the global indices of the batch in flight

    def reduce(name: str, out: torch.Tensor):
        # read the output in its hook, while it is fresh; a layer called again replaces it
        pending[name] = tops[name].offer(out, batch[0])

    cap = Capture(model, names, switches=False, reduce=reduce, stop_at=stop)
    skipped: list[int] = []
    finished: list[int] = []
    checks: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = sum(e - s for s, e, _ in plan)
    show = progress if ctx.is_main or callable(progress) else False  # one bar: rank 0's
    with (
        Progress(show, total, desc="mining", unit="img") as bar,
        eval_mode(model),
        torch.no_grad(),
    ):
        batches = _batches(source, plan, num_workers=num_workers, pin_memory=device.type == "cuda")
        for j, (idx, x, bad) in enumerate(batches):
            s, e, complete = plan[j]
            skipped.extend(bad)
            if x is not None:
                if x.dim() != 4 or x.shape[1:] != first.shape[1:]:
                    raise ValueError(
                        f"data: images must share one size; image {int(idx[0])} has shape "
                        f"{tuple(x.shape[1:])}, image {first_index} {tuple(first.shape[1:])}"
                    )
                x = x.to(device=device, dtype=first.dtype, non_blocking=True)
                idx = idx.to(device, non_blocking=True)
                checks.append((idx, _finite_rows(x)))
                pending.clear()
                batch[:] = [idx]
                with cap:
                    model(x)  # ends after the deepest requested layer (Capture swallows the stop)
                accept_all([tops[nm] for nm in names], [pending[nm] for nm in names])
            bar.update(e - s)
            if complete:  # the images mined so far are exactly those of the finished chunks
                _check_finite(checks)
                checks.clear()
                finished.extend(complete)
                if store is not None:
                    store.write_part(
                        part_name, {nm: t.state() for nm, t in tops.items()}, finished, skipped
                    )

    # -- merge: this run's ranks (all-gather), then the parts of earlier runs -----------------
    result = {}
    for nm in names:
        v, i, p = tops[nm].state()
        if ctx.world > 1:
            v = distributed.all_gather_cat(v.float().contiguous(), 1)
            i = distributed.all_gather_cat(i, 1)
            p = distributed.all_gather_cat(p, 1)
        for part in previous:
            pv, pi, pp = part.tops[nm]
            v = torch.cat([v.float(), pv.to(device)], 1)
            i = torch.cat([i, pi.to(device)], 1)
            p = torch.cat([p, pp.to(device)], 1)
        result[nm] = merge_topk(v.float(), i, p, k)
    skipped = _gather_skipped(skipped, ctx) + [s for part in previous for s in part.skipped]
    skipped = sorted(set(skipped))
    for nm in names:
        if bool((result[nm][1] < 0).any()):
            raise ValueError(
                f"k: expected at most the number of readable images ({n - len(skipped)} of {n}; "
                f"{len(skipped)} unreadable), got k={k}"
            )
    atlas = Atlas(
        layers=names,
        k=k,
        values={nm: r[0] for nm, r in result.items()},
        indices={nm: r[1] for nm, r in result.items()},
        positions={nm: r[2] for nm, r in result.items()},
        fields={},
        input_size=input_size,
        model=model,
        source=source,
        spatial=spatial,
    )
    atlas.provenance = {"model": model_info, "data": data_info, "skipped": skipped}
    return atlas


def _first_readable(source: ImageSource) -> tuple[torch.Tensor, int]:
    """The first image that can be read (a folder may start with a corrupt file)."""
    for i in range(min(len(source), 1000)):
        try:
            return source.get(i), i
        except UnreadableImage:
            continue
    raise ValueError("data: none of the first 1000 images could be read")


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B,) whether each image is finite, in vectorised passes that allocate
    nothing of the image's size. On the CPU one pass: a row's sum is finite when all its
    values are (NaN and infinities propagate), and, rarely, infinite when they are finite but
    huge (a float32 overflow): then the maxima and minima decide, as they do elsewhere (two
    passes, and no host synchronisation per batch)."""
    dims = tuple(range(1, x.dim()))
    if x.device.type == "cpu":
        ok = torch.isfinite(x.sum(dims))
        if bool(ok.all()):
            return ok
    return torch.isfinite(x.amax(dims)) & torch.isfinite(x.amin(dims))


def _check_finite(checks: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """One host synchronisation per chunk: name the first image with NaN or inf values."""
    if not checks:
        return
    ok = torch.cat([c[1] for c in checks])
    if bool(ok.all()):
        return
    idx = torch.cat([c[0] for c in checks])
    first = int(idx[~ok].min())
    raise ValueError(
        f"data: image {first} has NaN or infinite values (expected finite images); the chunks "
        "finished before it are kept when mining with checkpoint="
    )


def _session_id(ctx: distributed.Context) -> str:
    """A random id shared by every rank of this run (rank 0's, broadcast)."""
    token = torch.tensor([secrets.randbits(62)], dtype=torch.long)
    if ctx.world > 1:
        token = distributed.all_gather_cat(token, 0)[:1]
    return f"{int(token[0]):016x}"[-16:]


def _gather_skipped(skipped: list[int], ctx: distributed.Context) -> list[int]:
    if ctx.world == 1:
        return list(skipped)
    count = torch.tensor([len(skipped)], dtype=torch.long)
    counts = distributed.all_gather_cat(count, 0)
    width = max(1, int(counts.max()))
    local = torch.full((width,), -1, dtype=torch.long)
    local[: len(skipped)] = torch.tensor(skipped, dtype=torch.long)
    every = distributed.all_gather_cat(local, 0)
    return [int(v) for v in every.tolist() if v >= 0]
