"""Occlusion sensitivity: the paper's three maps from one batched sweep (docs/method.md Sec. 3.5, Fig. 7).

A grey square is slid systematically over the image. For every position of the square the
occluded image is run through the model once, and three things are recorded:

(a) the total (rectified) activation of one feature map of one layer (by default the
    strongest feature map of the last convolution in the unoccluded image);
(b) the probability of the target class (by default the predicted class);
(c) the most probable class and its probability.

Occluded copies are built in chunks (the input is never modified) and each chunk goes through
the model exactly once: the feature-map total is reduced inside the forward by
:class:`~zfwidgets.engine.capture.Capture` (so no large activation is kept), the probabilities come
from the model's output logits.

Where a model can be traced, only each square's forward cone is recomputed
(:mod:`zfwidgets.engine.incremental`). Tracing happens on the main thread only: a sweep in
another thread (a widget's job) takes that path when :func:`prepare` traced the model on the
main thread beforehand, and runs every occluded image through the whole model otherwise.

Threads. :func:`occlusion` runs in its caller's thread (the main thread, or a widget's job-runner
worker). Two things are shared between calls: the traced graphs, written on the main thread
only (:mod:`zfwidgets.engine.incremental`), and the chunk-size memo (``_CHUNKS``, a
``_ChunkMemo``), which a sweep that measures its chunk size writes from its caller's thread,
under the memo's lock (every read holds it too). Two sweeps of one model object at the same
time in two threads are not supported (each one's capture would see the other's forwards):
widgets sweep their own copy of the module tree.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_classes, check_logits, check_positive_int, model_device
from ..base.layers import eval_mode, first_conv, resolve_layer
from ..base.progress import Progress, ProgressArg, check_progress
from .capture import Capture
from .incremental import Window
from .incremental import plan as incremental_plan
from .incremental import trace as incremental_trace
from .probe import check_images, dry_run, last_called_conv

__all__ = [
    "OcclusionResult",
    "SweepGeometry",
    "check_fill",
    "default_layer",
    "occlusion",
    "prepare",
    "sweep_geometry",
]


@dataclass
class OcclusionResult:
    """The three occlusion maps of docs/method.md Sec. 3.5, Fig. 7, for a batch of N images.

    Maps are indexed ``[image, row position, column position]``; the square at
    ``[n, i, j]`` covers pixels ``rows[i]:rows[i] + window[0]`` and
    ``cols[j]:cols[j] + window[1]`` of image ``n``. Every tensor is on the model's device.

    Attributes
    ----------
    activation : Tensor (N, R, Cc), float32
        Total rectified activation ``relu(out[n, channel[n]]).sum()`` of the chosen feature
        map of ``layer`` with the square at each position (Fig. 7 (a)/(b) top row).
    probability : Tensor (N, R, Cc), float32
        Softmax probability of ``target[n]`` with the square at each position (Fig. 7 (d)).
    top_class : Tensor (N, R, Cc), int64
        Most probable class with the square at each position (Fig. 7 (e)).
    top_probability : Tensor (N, R, Cc), float32
        Probability of ``top_class``.
    rows, cols : Tensor (R,), (Cc,), int64
        Top-left corners of the square: ``0, stride, 2 * stride, ...`` plus a last position
        flush with the border (``H - window``) when the stride does not land on it.
    target : Tensor (N,), int64
        Class whose probability is mapped.
    layer : str
        Dotted name of the layer whose feature map is mapped.
    channel : Tensor (N,), int64
        Feature map of ``layer`` mapped for each image.
    window, stride : tuple[int, int]
        Square size and step, (height, width).
    fill : Tensor (N, C)
        Value of each channel inside the square, per image.
    baseline_probability : Tensor (N,), float32
        Probability of ``target`` in the unoccluded image.
    baseline_activation : Tensor (N,), float32
        Total rectified activation of the chosen feature map in the unoccluded image.
    baseline_top_class : Tensor (N,), int64
        Predicted class of the unoccluded image.
    batch_size : int
        Number of occluded images per forward pass in the sweep.
    """

    activation: torch.Tensor
    probability: torch.Tensor
    top_class: torch.Tensor
    top_probability: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    target: torch.Tensor
    layer: str
    channel: torch.Tensor
    window: tuple[int, int]
    stride: tuple[int, int]
    fill: torch.Tensor
    baseline_probability: torch.Tensor
    baseline_activation: torch.Tensor
    baseline_top_class: torch.Tensor
    batch_size: int

    def __repr__(self) -> str:
        n, r, c = self.probability.shape
        return (
            f"OcclusionResult({n} image(s), {r}x{c} positions, window={self.window}, "
            f"stride={self.stride}, layer={self.layer!r})"
        )


def _pair(value: object, name: str) -> tuple[int, int]:
    """An int or a (h, w) pair of ints -> (h, w), each >= 1."""
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1).tolist()
    if isinstance(value, int) and not isinstance(value, bool):
        pair = (value, value)
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        pair = (value[0], value[1])
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints (h, w), got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{name}: expected sizes >= 1, got {value!r}")
    return pair


def _positions(size: int, window: int, stride: int) -> list[int]:
    """0, stride, 2*stride, ... <= size - window, plus size - window when not reached."""
    last = size - window
    out = list(range(0, last + 1, stride))
    if out[-1] != last:
        out.append(last)
    return out


def _per_image_ints(value: object, n: int, name: str) -> list[int] | None:
    """None -> None; an int -> [v] * n; n ints (sequence or tensor) -> list."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer values, got a tensor of dtype {value.dtype}")
        value = value.reshape(-1).tolist() if value.dim() > 0 else int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        if len(value) != n:
            raise ValueError(
                f"{name}: expected one int or {n} ints (one per image), got {len(value)}"
            )
        return list(value)
    raise TypeError(f"{name}: expected an int or one int per image, got {value!r}")


def _fill_values(fill: object, x: torch.Tensor) -> torch.Tensor:
    """The value of each channel inside the square, per image: (N, C), x's dtype/device."""
    n, c = x.shape[:2]
    if fill is None:  # the paper's grey square: each image's per-channel mean
        return x.mean(dim=(2, 3))
    if isinstance(fill, bool):
        raise TypeError(f"fill: expected None, a number or {c} per-channel values, got {fill!r}")
    if isinstance(fill, (int, float)):
        try:
            value = float(fill)
        except OverflowError as err:  # an int beyond any float
            raise ValueError(f"fill: expected a finite value, got {fill!r}") from err
        if not math.isfinite(value) or abs(value) > torch.finfo(x.dtype).max:
            raise ValueError(
                f"fill: expected a finite value within {x.dtype} (largest "
                f"{torch.finfo(x.dtype).max:.4g}), got {fill!r}"
            )
        values = torch.full((c,), value, dtype=x.dtype, device=x.device)
    elif isinstance(fill, torch.Tensor) or (
        isinstance(fill, Sequence) and not isinstance(fill, str)
    ):
        try:
            # converted after the fact: a value beyond x's dtype becomes inf (refused below)
            # instead of torch's "cannot be converted ... without overflow"
            values = torch.as_tensor(fill, device=x.device)
            if values.is_complex():
                raise TypeError(f"complex fill {fill!r}")
            values = values.to(x.dtype)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise TypeError(
                f"fill: expected None, a number or {c} per-channel values, got {fill!r}"
            ) from err
        if values.dim() == 0:
            values = values.expand(c)
        # Accept (C,), (C, 1, 1) and (1, C, 1, 1) for (C,), and (N, C) per image.
        if values.dim() == 2 and tuple(values.shape) == (n, c):
            return values.clone()
        squeezed = values.reshape(-1) if values.numel() == c else None
        if squeezed is None:
            raise ValueError(
                f"fill: expected {c} per-channel values (one per input channel) or an ({n}, {c}) "
                f"tensor, got shape {tuple(values.shape)}"
            )
        values = squeezed
    else:
        raise TypeError(
            f"fill: expected None, a number or {c} per-channel values, got {type(fill).__name__}"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"fill: expected finite values, got {values.tolist()}")
    return values.unsqueeze(0).expand(n, c).clone()


def default_layer(model: nn.Module, shape: Sequence[int] | None = None) -> tuple[str, nn.Module]:
    """The last ``nn.Conv2d`` the forward calls for a ``shape`` input (default: one
    224x224 image with the first convolution's channels)."""
    if shape is None:
        conv = first_conv(model)
        shape = (1, conv[1].in_channels if conv is not None else 3, 224, 224)
    return last_called_conv(model, tuple(shape))


_last_conv = default_layer  # its name in the rest of this module


@dataclass(frozen=True)
class SweepGeometry:
    """Where the square goes: ``window`` and ``stride`` (h, w), ``rows`` and ``cols`` (the
    top-left corners of the positions along each axis)."""

    window: tuple[int, int]
    stride: tuple[int, int]
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @property
    def positions(self) -> tuple[int, int]:
        """(R, Cc): the number of square positions along each axis."""
        return len(self.rows), len(self.cols)


def sweep_geometry(
    size: tuple[int, int],
    window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None,
) -> SweepGeometry:
    """Check ``window`` and ``stride`` against an image of ``size`` (H, W) and list the square's
    positions, as :func:`occlusion` places them.

    ``window=None``: a square of about 1/7 of the shorter side; ``stride=None``: about a quarter
    of the window (at least 1).
    """
    h, w = size
    if window is None:
        side = max(1, round(min(h, w) / 7))
        win = (side, side)
    else:
        win = _pair(window, "window")
        if win[0] > h or win[1] > w:
            raise ValueError(
                f"window: expected a square no larger than the image ({h}x{w}), "
                f"got {win[0]}x{win[1]}"
            )
    if stride is None:
        step = (max(1, round(win[0] / 4)), max(1, round(win[1] / 4)))
    else:
        step = _pair(stride, "stride")
    return SweepGeometry(
        win,
        step,
        tuple(_positions(h, win[0], step[0])),
        tuple(_positions(w, win[1], step[1])),
    )


def prepare(model: nn.Module) -> bool:
    """Trace ``model`` now, on the main thread, so that :func:`occlusion` of it called later from
    any thread (a widget's job-runner worker) recomputes only each square's forward cone.

    Call it on the main thread, with the model a worker will sweep (a widget passes the module
    tree copy its job runs on). The graph is kept while the model lives; the model itself is
    not touched (the trace runs on a copy of its module tree). Returns whether the model has
    a graph: ``False`` for a model that cannot be traced (it is swept naively; the reason goes
    to the ``zfwidgets.engine.occlusion`` debug log) or off the main thread.
    """
    return incremental_trace(model) is not None


def check_fill(fill: object, x: torch.Tensor) -> torch.Tensor:
    """The value of each channel inside the square for images ``x`` (N, C, H, W): (N, C).
    Raises ``TypeError`` / ``ValueError`` for a bad ``fill`` (see :func:`occlusion`)."""
    return _fill_values(fill, x)


#: Chunk sizes tried at the start of a sweep when none is given; the fastest per image is kept
#: for the model, input size and window (measured once, remembered while the model lives).
CHUNK_TRIALS = (8, 16, 32, 64)


class _ChunkMemo:
    """The chunk size measured for each model and key (input shape, dtype, device, window,
    path), kept while the model lives.

    Sweeps run in their caller's thread (a cell on the main thread, widgets' job-runner
    workers), so several threads may read and write it: every access holds the lock, and a
    write replaces one entry whole (the last measurement wins).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sizes: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, model: nn.Module, key: tuple) -> int | None:
        with self._lock, contextlib.suppress(TypeError):  # TypeError: no weak reference
            return self._sizes.get(model, {}).get(key)
        return None

    def put(self, model: nn.Module, key: tuple, size: int) -> None:
        """Remember (not for a model that cannot be weakly referenced)."""
        with self._lock, contextlib.suppress(TypeError):
            self._sizes.setdefault(model, {})[key] = size


_CHUNKS = _ChunkMemo()


def _chunk_sizes(
    model: nn.Module, key: tuple, cap: int, total: int, given: bool
) -> tuple[Iterator[int], list[tuple[int, float]] | None]:
    """The chunk sizes of a sweep and, when they are to be measured, a list for the timings.

    ``cap``: the given ``batch_size`` or the most images ``max_memory`` allows. A chunk size
    remembered for ``key`` (input shape, dtype, device, window, path) is used when there is one;
    otherwise, when every trial size fits under ``cap`` and the sweep is long enough for them,
    the first chunks run at :data:`CHUNK_TRIALS` (real work, kept) and the rest at ``cap``
    until the measurement picks a size (see :func:`_remember_chunk`).
    """
    remembered = None if given else _CHUNKS.get(model, key)
    if remembered is not None:
        return _repeat(min(remembered, cap)), None
    if given or max(CHUNK_TRIALS) > cap or total <= sum(CHUNK_TRIALS):
        return _repeat(cap), None
    timings: list[tuple[int, float]] = []

    def sizes() -> Iterator[int]:
        yield from CHUNK_TRIALS
        best = min(timings, key=lambda t: t[1] / t[0])[0]  # seconds per image
        yield from _repeat(best)

    return sizes(), timings


def _repeat(size: int) -> Iterator[int]:
    while True:
        yield size


def _remember_chunk(model: nn.Module, key: tuple, timings: list, cap: int) -> int:
    """Keep the fastest trial size (seconds per image) for ``model`` and ``key``."""
    trials = timings[: len(CHUNK_TRIALS)]
    best = min(trials, key=lambda t: t[1] / t[0])[0] if trials else cap
    _CHUNKS.put(model, key, best)
    return best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _occlude(
    x: torch.Tensor,
    fill: torch.Tensor,
    img: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    window: tuple[int, int],
) -> torch.Tensor:
    """Occluded copies: ``x[img[k]]`` with the square at (top[k], left[k]) set to fill[img[k]].

    Shapes: x (N, C, H, W), fill (N, C), img/top/left (B,) -> (B, C, H, W). ``x`` is not
    modified.
    """
    h, w = x.shape[2:]
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + window[0])  # (B, H)
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + window[1])  # (B, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # (B, 1, H, W)
    return torch.where(mask, fill[img][:, :, None, None], x[img])


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | Sequence[int] | torch.Tensor | None = None,
    window: int | tuple[int, int] = 32,
    stride: int | tuple[int, int] = 8,
    fill: float | Sequence[float] | torch.Tensor | None = None,
    layer: str | nn.Module | None = None,
    channel: int | Sequence[int] | torch.Tensor | None = None,
    batch_size: int | None = None,
    max_memory: int = 2**30,
    progress: ProgressArg = False,
) -> OcclusionResult:
    """Slide a grey square over each image and map the model's response (docs/method.md Sec. 3.5, Fig. 7).

    Parameters
    ----------
    model : nn.Module
        Maps (B, C, H, W) images to (B, classes) logits. Run in eval mode (each module's
        ``training`` flag is restored after), under ``torch.no_grad``, on its own device.
    x : Tensor (N, C, H, W)
        Images on the model's device. Not modified.
    target : int, N ints or None
        Class whose probability is mapped; ``None``: each image's predicted class.
    window : int or (h, w)
        Side of the occluding square, at most the image size.
    stride : int or (sh, sw)
        Step between square positions. Positions are ``0, stride, ...`` plus a last one flush
        with the bottom/right border when the stride does not land on it.
    fill : None, float, C values or (N, C) tensor
        Value inside the square; ``None``: each image's per-channel mean (the paper's grey).
    layer : str or nn.Module, optional
        Layer whose feature map is totalled; default: the last ``nn.Conv2d`` the forward
        calls (auxiliary heads registered after the main path are skipped).
        Its output may be (B, C, ...) (summed over every dimension after C) or (B, C).
    channel : int, N ints or None
        Feature map of ``layer``; ``None``: per image, the channel with the strongest single
        activation (max over space) in the unoccluded image.
    batch_size : int, optional
        Occluded images per forward pass. Default: as many as fit in ``max_memory`` bytes
        given the activation bytes per image measured on the unoccluded forward (the outputs
        of every leaf module, summed: a conservative estimate) plus the image itself.
    max_memory : int
        Bytes per chunk used to derive ``batch_size``.
    progress : bool or callable, optional
        ``True``: a tqdm bar; a callable ``progress(done, total)`` is called after each forward
        pass with the number of images run so far (the N unoccluded ones, then the occluded
        copies; ``total = N * (1 + R * Cc)``). It may raise (e.g.
        :class:`zfwidgets.base.progress.Cancelled`) to stop the sweep: the model is left as it was
        and the exception propagates. See :mod:`zfwidgets.base.progress`.

    Returns
    -------
    OcclusionResult
        ``activation``, ``probability``, ``top_class``, ``top_probability`` of shape
        (N, R, Cc), ``rows`` (R,), ``cols`` (Cc,) and the choices made (``target``,
        ``layer``, ``channel``, ``fill``) with the unoccluded ``baseline_*`` values.

    Raises
    ------
    TypeError, ValueError
        For bad images, window/stride, fill, layer, channel or target, and for a model whose
        output is not (N, classes), all before any forward: the number of classes and of
        feature maps come from a shape-only pass on the meta device (for a model that cannot
        run on meta they are checked after the unoccluded forward, before the sweep).

    Examples
    --------
    >>> import zfwidgets as zf
    >>> d = zf.load_default()                       # 28x28 images, 10 classes
    >>> x, label = d.images[60]                     # an ankle boot
    >>> res = zf.occlusion(d.model, x[None], target=label, window=6, stride=2)
    >>> res.probability.shape, res.activation.shape, res.top_class.shape
    (torch.Size([1, 12, 12]), torch.Size([1, 12, 12]), torch.Size([1, 12, 12]))
    >>> d.classes[int(res.baseline_top_class[0])]
    'Ankle boot'

    On an ImageNet model, ``zf.occlusion(model, x, target=243, window=32, stride=8)`` maps
    224x224 images with the paper's square.
    """
    # -- checks that need no forward -----------------------------------------------------
    x = check_images(model, x)
    n, c, h, w = x.shape
    win = _pair(window, "window")
    step = _pair(stride, "stride")
    if win[0] > h or win[1] > w:
        raise ValueError(
            f"window: expected a square no larger than the image ({h}x{w}), got {win[0]}x{win[1]}"
        )
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    check_positive_int(max_memory, "max_memory")
    progress = check_progress(progress)
    targets = _per_image_ints(target, n, "target")
    if targets is not None and min(targets) < 0:
        raise ValueError(f"target: expected class indices >= 0, got {targets}")
    channels = _per_image_ints(channel, n, "channel")
    if channels is not None and min(channels) < 0:
        raise ValueError(f"channel: expected feature-map indices >= 0, got {channels}")
    layer_name, layer_module = (
        _last_conv(model, x.shape) if layer is None else resolve_layer(model, layer)
    )
    maps = layer_module.out_channels if isinstance(layer_module, nn.Conv2d) else None
    run = dry_run(model, x.shape, layers=(layer_name,))
    check_classes(targets, run.logits(n))
    out_shape = run.layer(layer_name)
    if out_shape is not None:
        if len(out_shape) < 2 or out_shape[0] != n or 0 in out_shape:
            raise ValueError(
                f"layer: expected {layer_name!r} to output a ({n}, C, ...) tensor, got shape "
                f"{out_shape}"
            )
        maps = out_shape[1]
    if maps is not None and channels is not None and max(channels) >= maps:
        raise ValueError(
            f"channel: {layer_name!r} has {maps} feature maps (0..{maps - 1}), got {channels}"
        )
    fills = _fill_values(fill, x)
    device = model_device(model)
    rows = torch.tensor(_positions(h, win[0], step[0]), dtype=torch.long, device=device)
    cols = torch.tensor(_positions(w, win[1], step[1]), dtype=torch.long, device=device)

    leaves = [name for name, m in model.named_modules() if name and not any(m.children())]
    watch = list(dict.fromkeys([*leaves, layer_name]))

    nr, nc = len(rows), len(cols)
    total_items = n * nr * nc
    with (
        Progress(progress, n + total_items, desc="occlusion", unit="img") as bar,
        eval_mode(model),
        torch.no_grad(),
    ):
        # -- the unoccluded forward: baseline, defaults, bytes per image ------------------
        out_bytes = [0]

        def reduce_base(name: str, out: object):
            if isinstance(out, torch.Tensor):
                out_bytes[0] += out.numel() * out.element_size()
                if name == layer_name:
                    if out.dim() < 2 or out.shape[0] != n or out.numel() == 0:
                        return {"shape": tuple(out.shape)}
                    flat = out.detach().reshape(n, out.shape[1], -1).float()
                    # (N, K) each: strongest single activation, rectified total
                    return {"peak": flat.amax(dim=2), "total": flat.relu().sum(dim=2)}
            return None

        cap = Capture(model, watch, switches=False, reduce=reduce_base)
        with cap:
            logits = check_logits(model(x), n)
        if cap.calls.get(layer_name, 0) == 0:
            raise ValueError(f"layer: {layer_name!r} was not called by the model's forward pass")
        stats = cap.activations[layer_name]
        if stats is None or "peak" not in stats:
            got = "a non-tensor output" if stats is None else f"shape {stats['shape']}"
            raise ValueError(
                f"layer: expected {layer_name!r} to output a ({n}, C, ...) tensor, got {got}"
            )
        peak, total = stats["peak"], stats["total"]
        num_classes = logits.shape[1]
        num_maps = peak.shape[1]
        if targets is not None and max(targets) >= num_classes:
            raise ValueError(
                f"target: the model has {num_classes} classes (0..{num_classes - 1}), got {targets}"
            )
        if channels is not None and max(channels) >= num_maps:
            raise ValueError(
                f"channel: {layer_name!r} has {num_maps} feature maps (0..{num_maps - 1}), "
                f"got {channels}"
            )
        bar.update(n)
        probs = torch.softmax(logits.float(), dim=1)
        base_top = probs.argmax(dim=1)
        tgt = base_top if targets is None else torch.tensor(targets, device=device)
        ch = peak.argmax(dim=1) if channels is None else torch.tensor(channels, device=device)
        idx = torch.arange(n, device=device)
        base_prob = probs[idx, tgt]
        base_act = total[idx, ch]

        per_image = math.ceil(out_bytes[0] / n) + x[0].numel() * x.element_size() * 2
        chunk = batch_size if batch_size is not None else max(1, max_memory // per_image)

        # -- the sweep: every (image, row, col) once, in chunks ---------------------------
        chunk = min(chunk, total_items)
        act = torch.empty(total_items, dtype=torch.float32, device=device)
        prob = torch.empty(total_items, dtype=torch.float32, device=device)
        top_p = torch.empty(total_items, dtype=torch.float32, device=device)
        top_c = torch.empty(total_items, dtype=torch.long, device=device)
        current: dict[str, torch.Tensor] = {}

        # Only the forward cone of each square is recomputed where the model can be traced.
        inc = incremental_plan(model, x, layer_name, logits, total)

        def reduce_sweep(name: str, out: torch.Tensor) -> torch.Tensor:
            sel = out.detach()[torch.arange(out.shape[0], device=out.device), current["ch"]]
            return sel.reshape(out.shape[0], -1).float().relu().sum(dim=1)  # (B,)

        # Chunk size: measured on this model and input unless given (see _chunk_sizes).
        key = (tuple(x.shape[1:]), x.dtype, str(device), win, inc is not None)
        sizes, timings = _chunk_sizes(model, key, chunk, total_items, batch_size is not None)
        start = 0
        while start < total_items:
            size = next(sizes)
            if start == 0:
                chunk = size
            t0 = time.perf_counter()
            k = torch.arange(start, min(start + size, total_items), device=device)
            img, rest = k // (nr * nc), k % (nr * nc)
            top, left = rows[rest // nc], cols[rest % nc]
            if inc is not None:
                square = fills[img][:, :, None, None].expand(-1, -1, *win).contiguous()
                act_k, out = inc.run(img, Window(square, top, left), ch[img])
                out = check_logits(out, len(k))
            else:
                batch = _occlude(x, fills, img, top, left, win)
                current["ch"] = ch[img]
                cap = Capture(model, [layer_name], switches=False, reduce=reduce_sweep)
                with cap:
                    out = check_logits(model(batch), len(k))
                act_k = cap.activations[layer_name]
                del batch
            if out.shape[1] != num_classes:
                raise ValueError(
                    f"model output: expected {num_classes} classes as on the unoccluded "
                    f"images, got shape {tuple(out.shape)}"
                )
            p = torch.softmax(out.float(), dim=1)
            sl = slice(start, start + len(k))
            act[sl] = act_k
            prob[sl] = p[torch.arange(len(k), device=device), tgt[img]]
            top_p[sl], top_c[sl] = p.max(dim=1)
            del out, p
            if timings is not None:
                _synchronize(device)
                timings.append((len(k), time.perf_counter() - t0))
            bar.update(len(k))
            start += len(k)
        if timings is not None:
            chunk = _remember_chunk(model, key, timings, chunk)

    shape = (n, nr, nc)
    return OcclusionResult(
        activation=act.reshape(shape),
        probability=prob.reshape(shape),
        top_class=top_c.reshape(shape),
        top_probability=top_p.reshape(shape),
        rows=rows,
        cols=cols,
        target=tgt.long(),
        layer=layer_name,
        channel=ch.long(),
        window=win,
        stride=step,
        fill=fills,
        baseline_probability=base_prob,
        baseline_activation=base_act,
        baseline_top_class=base_top,
        batch_size=chunk,
    )
