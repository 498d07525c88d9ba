"""Checkpoints (state dicts) of one model: the forms they come in, checked before loading.

Used by :class:`~zfwidgets.widgets.EvolutionSlider`, :class:`~zfwidgets.widgets.TopNine` and
the training monitor to show each checkpoint's features (the paper's Fig. 4, docs/method.md
Sec. 3.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["StateDict", "check_state_dict", "parse_checkpoints"]


StateDict = Mapping[str, Any]

_SHOW = 6  # keys named in an error message before "... (N more)"


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOW])
    return shown + (f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A hint when the keys differ only by a common prefix (``module.`` of DataParallel,
    ``_orig_mod.`` of torch.compile)."""
    if not missing or len(missing) != len(unexpected):
        return ""
    a, b = sorted(missing), sorted(unexpected)
    extra = b[0][: len(b[0]) - len(a[0])] if b[0].endswith(a[0]) else ""
    if extra and all(u == extra + m for m, u in zip(a, b)):
        return (
            f" (the checkpoint's keys carry the prefix {extra!r}: strip it with "
            f"{{k.removeprefix({extra!r}): v for k, v in state_dict.items()}})"
        )
    extra = a[0][: len(a[0]) - len(b[0])] if a[0].endswith(b[0]) else ""
    if extra and all(m == extra + u for m, u in zip(a, b)):
        return f" (the model's keys carry the prefix {extra!r} that the checkpoint's lack)"
    return ""


def _shape(v: object) -> tuple[int, ...] | None:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def check_state_dict(
    reference: StateDict, state_dict: object, what: str, against: str = "the model"
) -> None:
    """Raise ``ValueError`` naming the missing, unexpected and mis-shaped keys of
    ``state_dict`` compared with ``reference`` (what ``load_state_dict(strict=True)`` would
    reject), before anything is loaded.

    Parameters
    ----------
    reference : mapping of str -> Tensor
        ``model.state_dict()`` (or another checkpoint).
    state_dict : object
        The checkpoint to check.
    what : str
        How the error names the checkpoint (``"checkpoints[2]"``).
    against : str
        How the error names the reference.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"{what}: expected a state dict (model.state_dict()), got {type(state_dict).__name__}"
        )
    bad_keys = [k for k in state_dict if not isinstance(k, str)]
    if bad_keys:
        raise TypeError(f"{what}: expected str keys, got {bad_keys[:_SHOW]!r}")
    missing = [k for k in reference if k not in state_dict]
    unexpected = [k for k in state_dict if k not in reference]
    shapes = [
        f"{k!r} {_shape(state_dict[k])} (expected {_shape(reference[k])})"
        for k in reference
        if k in state_dict and _shape(reference[k]) != _shape(state_dict[k])
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing keys {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        parts.append(
            "mismatched shapes "
            + ", ".join(shapes[:_SHOW])
            + (f", ... ({len(shapes) - _SHOW} more)" if len(shapes) > _SHOW else "")
        )
    raise ValueError(
        f"{what} does not match {against}: {'; '.join(parts)}{_prefix_hint(missing, unexpected)}"
    )


def _label(label: object) -> str:
    if isinstance(label, int) and not isinstance(label, bool):
        return f"epoch {label}"
    return str(label)


def parse_checkpoints(
    checkpoints: object, labels: Sequence[object] | None = None
) -> tuple[list[StateDict], list[str]]:
    """Normalise the forms checkpoints come in to ``(state_dicts, labels)``.

    Parameters
    ----------
    checkpoints : list of state dicts, list of ``(label, state_dict)`` pairs, or a dict
        ``{label: state_dict}``. An int label ``n`` reads ``"epoch n"`` (as in
        :func:`zfwidgets.data.load_default`'s ``(paper_epoch, state_dict)`` pairs).
    labels : list, optional
        One label per checkpoint; overrides labels given with the checkpoints. Default
        ``"checkpoint 0"``, ``"checkpoint 1"``, ...

    Raises
    ------
    TypeError, ValueError
        For an empty list, something that is not a state dict, a label count that does not
        match, or checkpoints whose keys or shapes differ from the first one's.
    """
    if isinstance(checkpoints, Mapping):
        if checkpoints and all(isinstance(v, torch.Tensor) for v in checkpoints.values()):
            raise TypeError(
                "checkpoints: expected a list of state dicts, got a single state dict; "
                "pass [state_dict] or several"
            )
        items: list[Any] = list(checkpoints.items())
    elif isinstance(checkpoints, (str, bytes)) or not isinstance(checkpoints, Sequence):
        raise TypeError(
            "checkpoints: expected a list of state dicts or of (label, state_dict) pairs, "
            f"got {type(checkpoints).__name__}"
        )
    else:
        items = list(checkpoints)
    if not items:
        raise ValueError("checkpoints: expected at least one state dict, got none")
    states: list[StateDict] = []
    given: list[str | None] = []
    for i, item in enumerate(items):
        if (
            isinstance(item, tuple)
            and len(item) == 2
            and isinstance(item[1], Mapping)
            and not isinstance(item[0], Mapping)
        ):
            given.append(_label(item[0]))
            item = item[1]
        else:
            given.append(None)
        if not isinstance(item, Mapping):
            raise TypeError(
                f"checkpoints[{i}]: expected a state dict (model.state_dict()) or a "
                f"(label, state_dict) pair, got {type(item).__name__}"
            )
        states.append(item)
    if labels is not None:
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise TypeError(f"labels: expected a list of str, got {type(labels).__name__}")
        if len(labels) != len(states):
            raise ValueError(
                f"labels: expected {len(states)} labels (one per checkpoint), got {len(labels)}"
            )
        names = [_label(v) for v in labels]
    else:
        names = [g if g is not None else f"checkpoint {i}" for i, g in enumerate(given)]
    for i, sd in enumerate(states[1:], 1):
        check_state_dict(states[0], sd, f"checkpoints[{i}]", "checkpoints[0]")
    return states, names
