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

import traitlets as t

from ..base.checkpoints import StateDict, check_state_dict, parse_checkpoints
from ._base import ZFWidget

__all__ = ["EvolutionSlider", "check_state_dict", "parse_checkpoints"]


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
    >>> import zfwidgets as zf
    >>> from zfwidgets.widgets import FilterGrid, TopNine
    >>> d = zf.load_default()
    >>> slider = EvolutionSlider(d.checkpoints)           # [(epoch, state_dict), ...]
    >>> top = TopNine(d.model, d.images, layer="features.8", channel=3)
    >>> _ = slider.link(top)
    >>> grid = FilterGrid(d.model, checkpoints=slider.checkpoints, labels=slider.labels)
    >>> _ = slider.link(grid)
    >>> slider.labels[:3]
    ['epoch 1', 'epoch 2', 'epoch 5']

    In a notebook, ``display(slider, top, grid)`` shows the three, linked.
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
