"""What one snapshot of a training run holds, and the warnings read from it (dead and
dominating filters: docs/method.md Sec. 1, the RMS renormalisation rule; Sec. 3.4, Fig. 6)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Snapshot", "diagnose"]


@dataclass
class Snapshot:
    """What one snapshot shows (small: uint8 tiles and statistics, all on the CPU).

    Attributes
    ----------
    step, epoch : int
    label : str
        ``"step 120"`` or ``"epoch 3"``.
    layer : str
        The first convolution's dotted name.
    weight : Tensor (Cout, Cin, kh, kw) float32 or None
        Its weights (tiny for a first layer; ``keep_weights=False`` drops them).
    atlas : Tensor (H, W, 4) uint8
        The filters as tiles (:func:`zfwidgets.base.images.filter_atlas`).
    grid : dict
        The atlas layout (:meth:`GridLayout.to_json`).
    rms : Tensor (Cout,) float32
        Each filter's RMS (docs/method.md Sec. 1).
    dominating : Tensor (Cout,) bool
        RMS above the radius (the renormalisation rule would rescale them; Fig. 6 (a)).
    stats : dict[layer, dict[str, Tensor (C,)]]
        Per channel over the probe set: ``max``, ``mean``, ``active`` (fraction of images
        in which the channel fires), ``dead`` (bool: never fires).
    top9 : dict["layer/channel", Tensor (H, W, 4) uint8]
        The top-9 probe patches beside their deconvnet projections (Fig. 2 / Fig. 4).
    warnings : list of str
    """

    step: int
    epoch: int
    label: str
    layer: str
    weight: torch.Tensor | None
    atlas: torch.Tensor
    grid: dict
    rms: torch.Tensor
    dominating: torch.Tensor
    radius: float
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    top9: dict[str, torch.Tensor] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def dead(self, layer: str | None = None) -> torch.Tensor | None:
        """The dead channels of ``layer`` (default: the first layer's activations)."""
        if layer is None:
            layer = next(iter(self.stats), None)
        s = self.stats.get(layer) if layer is not None else None
        return None if s is None else s["dead"]


def diagnose(s: Snapshot) -> list[str]:
    """Dead and dominating-filter warnings (docs/method.md Sec. 1 RMS rule, Sec. 3 Fig. 6, Sec. 4)."""
    out = []
    bad = (~torch.isfinite(s.rms)).nonzero().flatten().tolist()
    if bad:
        out.append(
            f"{s.layer}: {len(bad)} filters have non-finite weights ({_ids(bad)}): training "
            "diverged; lower the learning rate"
        )
    dom = s.dominating.nonzero().flatten().tolist()
    if dom:
        out.append(
            f"{s.layer}: {len(dom)} of {len(s.rms)} filters dominate (RMS > {s.radius:g}: "
            f"{_ids(dom)}); renormalise them (zf.renormalize_filters_) or lower the learning rate"
        )
    for layer, st in s.stats.items():
        dead = st["dead"].nonzero().flatten().tolist()
        if dead:
            out.append(
                f"{layer}: {len(dead)} of {len(st['dead'])} channels dead on the probe set "
                f"({_ids(dead)}: never positive); persistent dead units often mean too high a "
                "learning rate"
            )
    return out


def _ids(ids: list[int], show: int = 8) -> str:
    s = ", ".join(map(str, ids[:show]))
    return s + (f", ... ({len(ids) - show} more)" if len(ids) > show else "")
