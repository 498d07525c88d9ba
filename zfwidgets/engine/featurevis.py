"""Feature visualisation by optimisation: an input that excites a unit, for many units at once.

Olah, Mordvintsev and Schubert, "Feature Visualization", Distill 2017 (the method of Lucid),
after Mordvintsev, Olah and Tyka, "Inceptionism" (2015); docs/method.md, "Feature
visualisation". For each requested channel (or unit) the input is optimised by gradient ascent
on the channel's activation at its strongest positions (a soft spatial maximum; Lucid's mean
over positions with ``objective="mean"``), or on the unit's activation:

- **parameterisation**: the image is the inverse real FFT of a learned spectrum whose
  coefficients are scaled by ``1 / frequency``, so all frequencies learn at the same rate and
  the optimisation is not dominated by high-frequency patterns; for three channels the colour
  is decorrelated (the square root of ImageNet's colour covariance, as in Lucid); a sigmoid
  maps it to the image range [0, 1]; the model's normalisation follows;
- **transformation robustness**: every step the image is moved by a few pixels (the grey
  margin of a padding), scaled and rotated slightly, each image of the batch its own way,
  so the optimum is a pattern the unit answers to wherever it sits, not a fragile adversarial
  texture.

Many units are optimised together in one batch (each batch element its own objective), on the
model's device; the forward stops after the layer (:class:`~.capture.Capture`'s ``stop_at``,
as mining does). Randomness comes from a ``torch.Generator`` per unit seeded from ``seed`` and
the unit, so a unit's picture does not depend on which other units share its batch.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base.checks import check_int, check_model, check_number, model_device, model_dtype
from ..base.images import IMAGENET_MEAN, IMAGENET_STD, find_normalize
from ..base.layers import eval_mode, first_conv, module_tree_copy, resolve_layer
from ..base.progress import Progress, ProgressArg, check_progress
from .capture import Capture
from .probe import check_input_size, dry_run, fixed_input_size

__all__ = ["COLOR_CORRELATION", "OBJECTIVES", "FeatureVis", "TRANSFORMS", "feature_vis"]

#: What a channel's objective may be: its soft spatial maximum, or its mean over positions.
OBJECTIVES = ("max", "mean")

#: Square root of the colour covariance of ImageNet photos (RGB), from Lucid
#: (``lucid.optvis.param.color``): multiplying decorrelated channels by it gives
#: natural-looking colour statistics. Its columns are scaled to a largest norm of 1 when used.
COLOR_CORRELATION = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

#: The transformation-robustness settings by name: the largest shift as a fraction of the image
#: side, the scale range and the largest rotation in degrees.
TRANSFORMS: dict[str, dict[str, float]] = {
    "standard": {"shift": 1 / 14, "scale": 0.05, "rotate": 5.0},
    "none": {"shift": 0.0, "scale": 0.0, "rotate": 0.0},
}

#: Standard deviation of the initial spectrum (a nearly uniform grey start) and Lucid's
#: divisor of the decorrelated image (keeps the sigmoid out of saturation at the start).
_INIT_SD = 0.01
_MAGIC = 4.0


@dataclass
class FeatureVis:
    """The result of :func:`feature_vis`, one row per requested channel or unit.

    Attributes
    ----------
    layer : str
        The dotted name of the layer.
    channels : Tensor (K,) long
        The channel of each row.
    units : Tensor (K, 3) long or None
        ``(c, y, x)`` of each row when units were asked for.
    images : Tensor (K, C, H, W)
        The optimised images in the image range [0, 1], for display (CPU, float32).
    inputs : Tensor (K, C, H, W)
        The same images in the model's input space (normalised), on the model's device and in
        its dtype: ``model(inputs)`` sees what was optimised.
    activation : Tensor (K,)
        The objective reached on ``inputs`` (no transformation): the channel's soft maximum or
        mean over positions, or the unit's activation (CPU, float32).
    start : Tensor (K,)
        The objective on the starting image (the same measure), for comparison.
    """

    layer: str
    channels: torch.Tensor
    units: torch.Tensor | None
    images: torch.Tensor
    inputs: torch.Tensor
    activation: torch.Tensor
    start: torch.Tensor

    def __len__(self) -> int:
        return len(self.channels)

    def __repr__(self) -> str:
        what = "units" if self.units is not None else "channels"
        return f"FeatureVis({self.layer!r}, {len(self)} {what}, images {tuple(self.images.shape)})"


# -- the parameterisation ------------------------------------------------------------------------
def _spectrum_scale(h: int, w: int, device: torch.device) -> torch.Tensor:
    """(h, w // 2 + 1): ``1 / max(frequency, 1 / max(h, w))`` for each rfft2 coefficient."""
    fy = torch.fft.fftfreq(h, device=device).unsqueeze(1)
    fx = torch.fft.rfftfreq(w, device=device).unsqueeze(0)
    freq = torch.sqrt(fy * fy + fx * fx)
    return 1.0 / torch.clamp(freq, min=1.0 / max(h, w))


def _color_matrix(c: int, device: torch.device) -> torch.Tensor | None:
    if c != 3:
        return None
    m = torch.tensor(COLOR_CORRELATION, dtype=torch.float32, device=device)
    return m / m.norm(dim=0).max()


def _to_image(
    spectrum: torch.Tensor, scale: torch.Tensor, color: torch.Tensor | None, h: int, w: int
) -> torch.Tensor:
    """Learned spectrum (K, C, h, w//2+1, 2) -> images (K, C, h, w) in (0, 1)."""
    coeffs = torch.view_as_complex(spectrum) * scale
    x = torch.fft.irfft2(coeffs, s=(h, w), norm="ortho") / _MAGIC
    if color is not None:
        x = torch.einsum("ij,kjhw->kihw", color, x)
    return torch.sigmoid(x)


def _transform(img: torch.Tensor, params: torch.Tensor, shift_px: float) -> torch.Tensor:
    """Each image moved, scaled and rotated by its own row of ``params`` (K, 4) in [-1, 1]
    (dy, dx, scale, angle, already scaled to their ranges but the shift, in units of
    ``shift_px`` pixels); the margin that comes in is grey (0.5), as Lucid's padding."""
    k, _, h, w = img.shape
    dy = params[:, 0] * shift_px * 2.0 / h
    dx = params[:, 1] * shift_px * 2.0 / w
    s = 1.0 / params[:, 2]  # the sampling grid shrinks when the picture grows
    a = params[:, 3]
    cos, sin = torch.cos(a) * s, torch.sin(a) * s
    theta = torch.stack(
        [torch.stack([cos, -sin * h / w, dx], 1), torch.stack([sin * w / h, cos, dy], 1)], 1
    )
    grid = F.affine_grid(theta.to(img.dtype), list(img.shape), align_corners=False)
    out = F.grid_sample(img - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + 0.5


def _unit_seed(seed: int, key: tuple[int, ...]) -> int:
    s = seed & 0xFFFFFFFFFFFF
    for v in key:
        s = (s * 1_000_003 + v + 1) % (1 << 62)
    return s


# -- the checks ----------------------------------------------------------------------------------
def _as_index_list(values: object, name: str) -> list[int]:
    if isinstance(values, torch.Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(
                f"{name}: expected integer indices, got a tensor of dtype {values.dtype}"
            )
        values = values.reshape(-1).tolist()
    elif hasattr(values, "tolist") and hasattr(values, "dtype"):  # a NumPy array
        if getattr(values.dtype, "kind", "") not in "iu":
            raise TypeError(
                f"{name}: expected integer indices, got an array of dtype {values.dtype}"
            )
        values = values.reshape(-1).tolist()
    elif not isinstance(values, (str, bytes, bool)) and hasattr(values, "__index__"):
        values = [values]
    if not isinstance(values, (Sequence, range)) or isinstance(values, (str, bytes)):
        raise TypeError(
            f"{name}: expected an int or a sequence of ints, got {type(values).__name__}"
        )
    out = []
    for v in values:
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"{name}: expected ints, got {type(v).__name__} {v!r}"[:200])
        out.append(operator.index(v))
    if not out:
        raise ValueError(f"{name}: expected at least one index, got none")
    return out


def _as_units(units: object) -> list[tuple[int, int, int]]:
    if isinstance(units, torch.Tensor):
        if units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
            raise TypeError(f"units: expected integer indices, got a tensor of dtype {units.dtype}")
        if units.dim() != 2 or units.shape[1] != 3:
            raise ValueError(
                f"units: expected (K, 3) indices (c, y, x), got shape {tuple(units.shape)}"
            )
        units = units.tolist()
    if not isinstance(units, Sequence) or isinstance(units, (str, bytes)):
        raise TypeError(
            f"units: expected a sequence of (c, y, x) tuples or a (K, 3) tensor, got "
            f"{type(units).__name__}"
        )
    out = []
    for u in units:
        if (
            not isinstance(u, (Sequence, torch.Tensor))
            or isinstance(u, (str, bytes))
            or len(u) != 3
            or any(isinstance(v, bool) or not hasattr(v, "__index__") for v in u)
        ):
            raise TypeError(f"units: expected (c, y, x) tuples of ints, got {u!r}"[:200])
        out.append(tuple(operator.index(v) for v in u))
    if not out:
        raise ValueError("units: expected at least one unit, got none")
    return out


def _as_size(size: object) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        h, w = (check_int(v, "size", low=1) for v in size)
        return h, w
    if isinstance(size, (tuple, list)):
        raise ValueError(f"size: expected an int or (H, W), got {size!r}"[:200])
    s = check_int(size, "size", low=1)
    return s, s


def _stats(value: object, name: str, c: int) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu", torch.float64).reshape(-1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor([float(value)], dtype=torch.float64)
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        t = torch.tensor([check_number(v, name) for v in value], dtype=torch.float64)
    else:
        raise TypeError(f"{name}: expected a number or {c} numbers, got {type(value).__name__}")
    if t.numel() not in (1, c):
        raise ValueError(f"{name}: expected 1 or {c} values (one per channel), got {t.numel()}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite values, got {t.tolist()}")
    return t.expand(c).clone()


def _normalisation(model: nn.Module, mean: object, std: object, c: int):
    if (mean is None) != (std is None):
        raise ValueError(
            f"mean, std: expected both or neither, got mean={mean!r} and std={std!r}"[:200]
        )
    if mean is None:
        found = find_normalize(model)
        if found is not None:
            mean, std = found
        elif c == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = 0.0, 1.0
    m, s = _stats(mean, "mean", c), _stats(std, "std", c)
    if bool((s == 0).any()):
        raise ValueError(f"std: expected non-zero values, got {s.tolist()}")
    return m, s


def _default_size(model: nn.Module, c: int) -> tuple[int, int]:
    """The size the model says it takes (``input_size`` attribute, timm's
    ``pretrained_cfg``), else the one size its classifier takes, else 224."""
    for cfg in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None)):
        if isinstance(cfg, dict) and "input_size" in cfg:
            size = cfg["input_size"]
            try:
                return _as_size(tuple(size)[-2:])
            except (TypeError, ValueError):
                pass
    size = getattr(model, "input_size", None)
    if size is not None and not callable(size):
        try:
            return _as_size(tuple(size)[-2:] if isinstance(size, (tuple, list)) else size)
        except (TypeError, ValueError):
            pass
    fixed = fixed_input_size(model, c)
    return (fixed, fixed) if fixed is not None else (224, 224)


def _layer_plan(model: nn.Module, name: str, shape: tuple[int, int, int, int]):
    """The layer's output shape and the call after which the forward stops, found before the
    work (a shape-only pass on meta; a real pass of one grey image when meta cannot run)."""
    run = dry_run(model, shape, layers=(name,))
    if run.ok or name in run.shapes:
        if run.ok:
            out = run.layer(name)
        else:  # the part after the layer (a head wanting one size) failed: it never runs here
            out = run.shapes[name]
        return tuple(out), (name, run.calls[name] - 1)
    if not run.calls.get(name):
        check_input_size(model, shape, name="size")  # names the sizes the network takes
    # the model cannot run on the meta device: one real pass on a copy of its module tree
    target = module_tree_copy(model)
    x = torch.full(shape, 0.0, device=model_device(model), dtype=model_dtype(model))
    with torch.no_grad(), eval_mode(target), Capture(target, [name], switches=False) as cap:
        try:
            target(x)
        except Exception:
            if not cap.calls.get(name):
                raise
    if not cap.calls.get(name) or not isinstance(cap.activations.get(name), torch.Tensor):
        raise ValueError(
            f"layer: {name!r} is not called by the model's forward pass (or returns no tensor); "
            "pick a module the forward uses"
        )
    return tuple(cap.activations[name].shape), (name, cap.calls[name] - 1)


# -- the work ------------------------------------------------------------------------------------
def feature_vis(
    model: nn.Module,
    layer: str | nn.Module,
    channels: Any = None,
    *,
    units: Any = None,
    objective: str = "max",
    size: int | tuple[int, int] | None = None,
    steps: int = 512,
    lr: float = 0.1,
    transforms: str = "standard",
    mean: Any = None,
    std: Any = None,
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: ProgressArg = True,
) -> FeatureVis:
    """Inputs that maximise channels (or units) of ``layer``, optimised together in batches.

    Olah et al., "Feature Visualization" (Distill 2017); docs/method.md, "Feature
    visualisation". Objective: the channel's activation at its strongest positions (a soft
    spatial maximum, ``objective="max"``) or its mean over positions (``"mean"``; the channel's
    value for a (B, C) layer), or the activation of one unit ``(c, y, x)``. Parameterisation: a Fourier spectrum scaled by 1/frequency, decorrelated
    colour for 3-channel models, a sigmoid to [0, 1], then the model's normalisation.
    Transformation robustness: a random shift (grey margin), scale and rotation of each image
    at every step. Adam on the spectrum only: no gradient reaches the model's parameters.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode on its own device (every module's flag restored); never moved or
        changed. The forward stops after ``layer``.
    layer : str or nn.Module
        A dotted ``named_modules()`` name (or the module): outputs (B, C, H, W) or (B, C).
    channels : int or sequence of ints, optional
        Channels to visualise (one image each). Exactly one of ``channels`` and ``units``.
    units : sequence of (c, y, x), optional
        Single units of a (B, C, H, W) layer, as :func:`zfwidgets.deconv` takes them (without
        the image index). The objective is the unit's activation.
    objective : "max" or "mean"
        For a channel of a (B, C, H, W) layer: ``"max"``, a soft spatial maximum
        (``T * logsumexp(a / T)`` over positions, ``T`` the spread of the layer's output on a
        grey image), the atlas's own measure (the strongest position, as the top-9 rank
        images); ``"mean"``, the channel's mean over positions (Lucid's channel objective),
        which tiles the pattern over the image. At a convolution's output (before its ReLU)
        the mean is linear in a first-layer input, so ``"mean"`` there gives a near-flat
        image; docs/method.md compares them.
    size : int or (H, W), optional
        The image size. Default: the model's ``input_size`` attribute (or timm's
        ``pretrained_cfg["input_size"]``), else the one size its classifier takes, else 224.
        Too small for the network up to ``layer``: ``ValueError``.
    steps : int
        Optimisation steps (Adam). 512 with ``lr=0.1`` is what brings 90% of the channels of
        every layer of the bundled model to their top-1 over its images (BENCHMARKS.md); 256
        leave its deepest layer at 75-84%.
    lr : float
        Adam's learning rate on the spectrum.
    transforms : "standard" or "none"
        Transformation robustness (:data:`TRANSFORMS`): shifts up to 1/14 of the side, scale
        within 5%, rotation within 5 degrees; ``"none"`` optimises the plain image.
    mean, std : number or C numbers, optional
        The model's normalisation: ``input = (image - mean) / std``. Default: what
        :func:`zfwidgets.base.images.find_normalize` finds on the model (``mean``/``std``
        attributes), else ImageNet's for 3 channels, else 0 and 1.
    seed : int
        Seeds the start and the transformations of each unit (a ``torch.Generator`` per unit):
        the same seed gives the same images on a CPU, whatever the batch.
    batch_size : int
        Units optimised together (memory grows with it).
    device : torch.device or str, optional
        Must be the model's device when given (the model is never moved).
    progress : bool or callable
        ``True``: a bar; a callable ``progress(done, total)`` is called after every step (total
        = batches x steps) and may raise to cancel (the model is restored).

    Returns
    -------
    FeatureVis
        ``images`` (K, C, H, W) in [0, 1], ``inputs`` (K, C, H, W) normalised, ``activation``
        (K,) reached and ``start`` (K,) at the starting image.
    """
    check_model(model)
    name, _ = resolve_layer(model, layer)
    if (channels is None) == (units is None):
        raise ValueError(
            "channels, units: expected exactly one of channels=[c, ...] or units=[(c, y, x), ...]"
        )
    chans = _as_index_list(channels, "channels") if channels is not None else None
    unit_list = _as_units(units) if units is not None else None
    steps = check_int(steps, "steps", low=1)
    lr = check_number(lr, "lr", positive=True)
    batch_size = check_int(batch_size, "batch_size", low=1)
    seed = check_int(seed, "seed")
    if not isinstance(transforms, str):
        raise TypeError(
            f"transforms: expected one of {sorted(TRANSFORMS)}, got {type(transforms).__name__}"
        )
    if transforms not in TRANSFORMS:
        raise ValueError(f"transforms: expected one of {sorted(TRANSFORMS)}, got {transforms!r}")
    if not isinstance(objective, str):
        raise TypeError(f"objective: expected 'max' or 'mean', got {type(objective).__name__}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected 'max' or 'mean', got {objective!r}")
    progress = check_progress(progress)
    dev = model_device(model)
    if device is not None:
        try:
            want = torch.device(device)
        except (TypeError, RuntimeError) as exc:
            raise TypeError(f"device: expected a torch.device or str, got {device!r}") from exc
        if want.type != dev.type or (want.index is not None and want.index != dev.index):
            raise ValueError(
                f"device: the model is on {dev} and is never moved; expected {dev} or None, "
                f"got {want}"
            )
    conv = first_conv(model)
    c_in = conv[1].in_channels if conv is not None else 3
    hw = _as_size(size) or _default_size(model, c_in)
    h, w = hw
    mean_t, std_t = _normalisation(model, mean, std, c_in)

    out_shape, stop = _layer_plan(model, name, (1, c_in, h, w))
    if len(out_shape) not in (2, 4):
        raise ValueError(
            f"layer: {name!r} outputs shape {out_shape}; feature_vis needs (B, C, H, W) or (B, C)"
        )
    n_ch = out_shape[1]
    if chans is not None:
        bad = [c for c in chans if not 0 <= c < n_ch]
        if bad:
            raise ValueError(
                f"channels: expected ints in [0, {n_ch}) for layer {name!r}, got {bad[:10]}"
            )
        keys = [(c,) for c in chans]
    else:
        if len(out_shape) != 4:
            raise ValueError(
                f"units: layer {name!r} has no spatial size (output {out_shape}); pass channels="
            )
        lim = out_shape[1:]
        for k, u in enumerate(unit_list):
            if not all(0 <= v < m for v, m in zip(u, lim)):
                raise ValueError(
                    f"units: unit {k} = {u} is out of range: (c, y, x) must lie in "
                    f"[0, {lim[0]}) x [0, {lim[1]}) x [0, {lim[2]}) for layer {name!r} at "
                    f"size {h}x{w}"
                )
        keys = unit_list

    dtype = model_dtype(model)
    spec = TRANSFORMS[transforms]
    shift_px = spec["shift"] * min(h, w)
    k_total = len(keys)
    batches = [keys[i : i + batch_size] for i in range(0, k_total, batch_size)]
    images, inputs, reached, started = [], [], [], []
    with eval_mode(model):
        temperature = (
            _temperature(
                model, name, stop, (1, c_in, h, w), mean_t.float(), std_t.float(), dev, dtype
            )
            if objective == "max" and chans is not None and len(out_shape) == 4
            else 1.0
        )
    with (
        Progress(progress, len(batches) * steps, desc="feature vis", unit="step") as bar,
        eval_mode(model),
    ):
        for batch in batches:
            img, x, act, act0 = _optimise(
                model,
                name,
                stop,
                batch,
                hw,
                objective_kind=objective,
                temperature=temperature,
                steps=steps,
                lr=lr,
                spec=spec,
                shift_px=shift_px,
                mean=mean_t,
                std=std_t,
                seed=seed,
                device=dev,
                dtype=dtype,
                bar=bar,
            )
            images.append(img)
            inputs.append(x)
            reached.append(act)
            started.append(act0)
    ch = torch.tensor([k[0] for k in keys], dtype=torch.long)
    return FeatureVis(
        layer=name,
        channels=ch,
        units=torch.tensor(unit_list, dtype=torch.long) if unit_list is not None else None,
        images=torch.cat(images),
        inputs=torch.cat(inputs),
        activation=torch.cat(reached),
        start=torch.cat(started),
    )


def _temperature(model, name, stop, shape, mean, std, device, dtype) -> float:
    """The spread (standard deviation) of the whole layer output on a grey image: the soft
    maximum's temperature, so that it behaves alike on layers of any scale."""
    kept = {}

    def keep(_: str, out: torch.Tensor) -> None:
        kept["out"] = out

    c = mean.numel()
    x0 = (0.5 - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)
    x0 = x0.to(device=device, dtype=dtype).expand(shape).contiguous()
    with torch.no_grad(), Capture(model, [name], switches=False, reduce=keep, stop_at=stop):
        model(x0)
    spread = float(kept["out"].float().std()) if kept["out"].numel() > 1 else 0.0
    return spread if math.isfinite(spread) and spread > 1e-6 else 1.0


def _optimise(
    model,
    name,
    stop,
    keys,
    hw,
    *,
    objective_kind,
    temperature,
    steps,
    lr,
    spec,
    shift_px,
    mean,
    std,
    seed,
    device,
    dtype,
    bar,
):
    """One batch: the spectra of ``keys`` optimised together; returns images, inputs,
    reached and starting objectives."""
    h, w = hw
    c = mean.numel()
    k = len(keys)
    wf = w // 2 + 1
    init = torch.empty(k, c, h, wf, 2)
    table = torch.empty(k, steps, 4)
    for i, key in enumerate(keys):
        g = torch.Generator().manual_seed(_unit_seed(seed, key))
        init[i] = torch.randn(c, h, wf, 2, generator=g) * _INIT_SD
        table[i] = torch.rand(steps, 4, generator=g) * 2 - 1
    # shift in pixels (a whole number, as Lucid's jitter), scale factor, angle in radians
    table[..., :2] = torch.round(table[..., :2] * shift_px) / max(shift_px, 1e-12)
    table[..., 2] = 1.0 + table[..., 2] * spec["scale"]
    table[..., 3] = table[..., 3] * math.radians(spec["rotate"])
    table = table.to(device)
    moving = spec["shift"] > 0 or spec["scale"] > 0 or spec["rotate"] > 0

    spectrum = init.to(device).requires_grad_(True)
    scale = _spectrum_scale(h, w, device)
    color = _color_matrix(c, device)
    m = mean.to(device=device, dtype=torch.float32).view(1, c, 1, 1)
    s = std.to(device=device, dtype=torch.float32).view(1, c, 1, 1)
    ch = torch.tensor([key[0] for key in keys], device=device)
    rows = torch.arange(k, device=device)
    is_unit = len(keys[0]) == 3
    spatial = [torch.tensor([key[j] for key in keys], device=device) for j in (1, 2) if is_unit]

    def objective(x: torch.Tensor) -> torch.Tensor:
        """(k,) objectives of the normalised batch ``x``: a forward that stops after the layer."""
        kept: dict[str, torch.Tensor] = {}

        def keep(_: str, out: torch.Tensor) -> None:
            kept["out"] = out

        with Capture(model, [name], switches=False, reduce=keep, stop_at=stop):
            model(x.to(dtype))
        out = kept["out"]
        if out.dim() == 2:
            return out[rows, ch].float()
        if is_unit:
            return out[rows, ch, spatial[0], spatial[1]].float()
        a = out[rows, ch].float().flatten(1)
        if objective_kind == "mean":
            return a.mean(1)
        # a soft spatial maximum: logsumexp at a temperature set by the layer's spread at the
        # start (scale-free), so every strong position gets some of the gradient
        return torch.logsumexp(a / temperature, 1) * temperature

    opt = torch.optim.Adam([spectrum], lr=lr)
    with torch.no_grad():
        start = objective((_to_image(spectrum, scale, color, h, w) - m) / s)
    for step in range(steps):
        with torch.enable_grad():
            img = _to_image(spectrum, scale, color, h, w)
            if moving:
                img = _transform(img, table[:, step], shift_px)
            loss = -objective((img - m) / s).sum()
            (grad,) = torch.autograd.grad(loss, [spectrum])
        spectrum.grad = grad
        opt.step()
        spectrum.grad = None
        bar.update(1)
    with torch.no_grad():
        img = _to_image(spectrum, scale, color, h, w)
        x = ((img - m) / s).to(dtype)
        reached = objective(x)
    return img.float().cpu(), x, reached.cpu(), start.cpu()
