"""The paper's deconvnet, literally: unpool by switches, rectify, transposed filter.

A step-by-step implementation of docs/method.md Sec. 2 for ``nn.Sequential`` stacks of
``Conv2d``, ``ReLU``, ``MaxPool2d``, ``LocalResponseNorm``, ``Dropout`` and ``Identity``.
It exists as the reference the fast engine (:mod:`zfwidgets.engine.backprop`) is tested against;
it runs one unit at a time and is slow on purpose: every step is visible.

Unpooling sums where two overlapping windows share an argmax (``scatter_add``), which is
the adjoint of max-pooling; see :mod:`zfwidgets.engine.backprop`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backprop import RULES

__all__ = ["deconv_literal", "unpool"]

_SUPPORTED = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.LocalResponseNorm, nn.Dropout, nn.Identity)


def unpool(
    signal: torch.Tensor, switches: torch.Tensor, input_size: tuple[int, int]
) -> torch.Tensor:
    """Place each value of ``signal`` (N, C, h, w) at its switch (flat index into the input
    plane); values of windows sharing a switch are summed. Returns (N, C, H, W)."""
    N, C = signal.shape[:2]
    H, W = input_size
    out = signal.new_zeros(N, C, H * W)
    out.scatter_add_(2, switches.flatten(2), signal.flatten(2))
    return out.view(N, C, H, W)


def _transposed_conv(
    signal: torch.Tensor, conv: nn.Conv2d, input_size: tuple[int, int]
) -> torch.Tensor:
    """Apply the transposed filters of ``conv`` (each flipped, i.e. conv_transpose2d)."""
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("deconv_literal: only groups=1, zero, integer padding convolutions")
    sh, sw = conv.stride
    ph, pw = conv.padding
    dh, dw = conv.dilation
    kh, kw = conv.kernel_size
    h, w = signal.shape[2:]
    # output_padding recovers input rows that the strided forward never reached
    oph = input_size[0] - ((h - 1) * sh - 2 * ph + dh * (kh - 1) + 1)
    opw = input_size[1] - ((w - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
    return F.conv_transpose2d(
        signal,
        conv.weight,
        None,
        stride=conv.stride,
        padding=conv.padding,
        output_padding=(oph, opw),
        dilation=conv.dilation,
    )


def deconv_literal(
    model: nn.Sequential,
    x: torch.Tensor,
    *,
    layer: int,
    unit: tuple[int, int, int],
    rule: str = "deconv",
) -> torch.Tensor:
    """Project one unit ``(c, y, x)`` of the output of ``model[layer]`` for every image of
    ``x`` (N, C, H, W) back to pixel space, step by step. Returns (N, C, H, W).

    docs/method.md Sec. 2: (1) forward, recording every layer's input and each max-pool's
    switches; (2) zero every activation of the layer but the chosen one (set to 1);
    (3) walk down: unpool by switches, rectify (``rule``), transposed filter; contrast
    normalisation is skipped (``"deconv"``); ``"guided"`` and ``"saliency"`` also mask by the
    forward ReLU input, and saliency does not rectify.
    """
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if rule != "deconv" and any(isinstance(m, nn.LocalResponseNorm) for m in model[: layer + 1]):
        raise ValueError("deconv_literal: LocalResponseNorm is only supported with rule='deconv'")
    inputs, switches = [], {}
    h = x.detach()
    with torch.no_grad():
        for i, m in enumerate(model[: layer + 1]):
            if not isinstance(m, _SUPPORTED):
                raise ValueError(
                    f"deconv_literal: layer {i} is {type(m).__name__}; supported: {_SUPPORTED}"
                )
            inputs.append(h)
            if isinstance(m, nn.MaxPool2d):
                h, switches[i] = F.max_pool2d(
                    h,
                    m.kernel_size,
                    m.stride,
                    m.padding,
                    m.dilation,
                    ceil_mode=m.ceil_mode,
                    return_indices=True,
                )
            elif isinstance(m, nn.ReLU):
                h = F.relu(h)
            elif isinstance(m, (nn.Dropout, nn.Identity)):
                pass
            else:
                h = m(h)
        c, yy, xx = unit
        g = torch.zeros_like(h)
        g[:, c, yy, xx] = 1.0
        for i in range(layer, -1, -1):
            m, inp = model[i], inputs[i]
            if isinstance(m, nn.MaxPool2d):
                g = unpool(g, switches[i], inp.shape[2:])
            elif isinstance(m, nn.ReLU):
                if rule == "deconv":
                    g = F.relu(g)
                elif rule == "guided":
                    g = F.relu(g) * (inp > 0)
                else:
                    g = g * (inp > 0)
            elif isinstance(m, nn.Conv2d):
                g = _transposed_conv(g, m, inp.shape[2:])
            # LocalResponseNorm, Dropout, Identity: skipped on the way down
    return g
