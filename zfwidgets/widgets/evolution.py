"""EvolutionSlider: a slider over checkpoints saved during training that swaps the weights
another widget shows (docs/method.md Sec. 3.2, Fig. 4: the strongest activations projected to pixel
space at epochs 1, 2, 5, 10, 20, 30, 40 and 64).

The slider holds the checkpoints and one synced trait, ``index``. :meth:`EvolutionSlider.link`
ties ``index`` to the linked widget's ``checkpoint`` trait (both ways): a :class:`TopNine` is
given the checkpoints (it loads them into its private copy of the model and mines each one
once), a :class:`FilterGrid` built with the same checkpoints follows the slider. The user's
model is never modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import traitlets as t

from ._base import ZFWidget

__all__ = ["EvolutionSlider", "check_state_dict", "parse_checkpoints"]

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


class EvolutionSlider(ZFWidget):
    """A slider over checkpoints that swaps the weights of the widgets linked to it.

    docs/method.md Sec. 3.2, Fig. 4: how the strongest activations of a feature map evolve during
    training. Link a :class:`TopNine` (each checkpoint is mined once, on a private copy of the
    model) or a :class:`FilterGrid` built with the same checkpoints.

    Parameters
    ----------
    checkpoints : list of state dicts, list of ``(label, state_dict)`` pairs, or dict
        Weights saved during training (``model.state_dict()`` per epoch), all with the same
        keys and shapes. An int label ``n`` reads ``"epoch n"``.
    labels : list of str, optional
        One label per checkpoint (default: the pair labels, else ``"checkpoint i"``).
    index : int
        The checkpoint shown first.
    description : str
        Text before the slider.

    Attributes
    ----------
    index : int
        The checkpoint shown (synced; the slider sets it).
    labels : list of str
        One label per checkpoint (synced).
    checkpoints : list of state dicts
        The checkpoints (read only).

    Examples
    --------
    >>> slider = EvolutionSlider(d.checkpoints)           # [(epoch, state_dict), ...]
    >>> top = TopNine(d.model, d.images, layer="features.8", channel=3)
    >>> slider.link(top)
    >>> grid = FilterGrid(d.model, checkpoints=slider.checkpoints, labels=slider.labels)
    >>> slider.link(grid)
    >>> display(slider, top, grid)
    """

    _bundle = "evolution.js"

    index = t.Int(0).tag(sync=True)
    labels = t.List(t.Unicode()).tag(sync=True)
    description = t.Unicode("checkpoint").tag(sync=True)

    def __init__(
        self,
        checkpoints: Sequence[StateDict] | Sequence[tuple[object, StateDict]] | Mapping,
        *,
        labels: Sequence[object] | None = None,
        index: int = 0,
        description: str = "checkpoint",
        **kwargs: Any,
    ) -> None:
        states, names = parse_checkpoints(checkpoints, labels)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(states):
            raise ValueError(f"index: expected an int in [0, {len(states)}), got {index!r}")
        self._checkpoints = states
        self._links: list[tuple[Any, t.link]] = []
        super().__init__(labels=names, index=index, description=str(description), **kwargs)

    def __len__(self) -> int:
        return len(self._checkpoints)

    @property
    def checkpoints(self) -> list[StateDict]:
        """The checkpoints, in slider order (a new list; the state dicts are not copied)."""
        return list(self._checkpoints)

    @property
    def state_dict(self) -> StateDict:
        """The checkpoint at ``index``."""
        return self._checkpoints[self.index]

    @t.validate("index")
    def _validate_index(self, proposal: dict) -> int:
        i = proposal["value"]
        n = len(self._checkpoints)
        if not 0 <= i < n:
            raise t.TraitError(f"index: expected an int in [0, {n}), got {i}")
        return i

    @t.validate("labels")
    def _validate_labels(self, proposal: dict) -> list[str]:
        value = list(proposal["value"])
        if len(value) != len(self._checkpoints):
            raise t.TraitError(
                f"labels: expected {len(self._checkpoints)} labels (one per checkpoint), "
                f"got {len(value)}"
            )
        return value

    def link(self, widget: Any) -> EvolutionSlider:
        """Make ``widget`` show the checkpoint at ``index`` (now and whenever it changes).

        ``widget`` needs a synced int trait ``checkpoint``. When it has a
        ``set_checkpoints(checkpoints, labels=...)`` method (:class:`TopNine`), it is given
        the checkpoints first and checks them against its model (``ValueError`` naming the
        missing / unexpected keys). A widget that holds its own checkpoints
        (:class:`FilterGrid`, trait ``checkpoint_labels``) must hold as many: build it with
        ``checkpoints=slider.checkpoints``.

        Returns
        -------
        EvolutionSlider
            ``self``, so links chain: ``slider.link(top).link(grid)``.
        """
        if any(w is widget for w, _ in self._links):
            return self
        if not (isinstance(widget, t.HasTraits) and widget.has_trait("checkpoint")):
            raise TypeError(
                f"link: expected a widget with a 'checkpoint' trait (TopNine, FilterGrid), "
                f"got {type(widget).__name__}"
            )
        setter = getattr(widget, "set_checkpoints", None)
        if callable(setter):
            setter(self._checkpoints, labels=list(self.labels))
        elif widget.has_trait("checkpoint_labels"):
            held = len(widget.checkpoint_labels)
            if held != len(self._checkpoints):
                name = type(widget).__name__
                raise ValueError(
                    f"link: {name} holds {held} checkpoint(s), the slider {len(self)}; build "
                    f"it with {name}(model, checkpoints=slider.checkpoints, "
                    "labels=slider.labels)"
                )
        self._links.append((widget, t.link((self, "index"), (widget, "checkpoint"))))
        return self

    def unlink(self, widget: Any) -> None:
        """Stop driving ``widget`` (it keeps showing the checkpoint it shows)."""
        for i, (w, link) in enumerate(self._links):
            if w is widget:
                link.unlink()
                del self._links[i]
                return
        raise ValueError(f"unlink: this {type(widget).__name__} is not linked to the slider")

    @property
    def linked(self) -> list[Any]:
        """The widgets the slider drives."""
        return [w for w, _ in self._links]
