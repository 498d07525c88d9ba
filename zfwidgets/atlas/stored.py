"""Opening a stored atlas for a model: what can be used, and what to tell the user.

:func:`open_atlas` is what the Explorer (and any front end) calls with whatever the user gave as
``atlas=``: ``None``, an :class:`~zfwidgets.Atlas`, or the path of an atlas folder. It never
raises for a bad folder; it returns the usable atlas (or ``None``) and plain-text notes:

- a missing, unreadable, partial or corrupted folder (:meth:`Atlas.load` validates it): not
  used; the caller mines instead;
- an atlas from another model: the manifest records the model's class and a hash of its
  structure (and of its parameters) when it was mined; a different class or structure is
  refused; different parameters (other weights) are refused for a folder and noted for an
  ``Atlas`` passed in (the hash is computed on the model's device, and float sums can differ
  in the last bits between a GPU and a CPU: load it yourself to vouch for it);
- an atlas mined over another number of images than ``data``: refused;
- layers without stored tiles, or the layers offered that the atlas lacks: usable, noted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OpenedAtlas", "open_atlas"]


@dataclass
class OpenedAtlas:
    """The result of :func:`open_atlas`.

    Attributes
    ----------
    atlas : Atlas or None -- what to use (None: mine instead)
    notes : list of str -- what the user should know, one sentence each
    refused : bool -- an atlas was given but cannot be used
    stored : list of str -- layers whose units are read from stored tiles
    """

    atlas: Any
    notes: list[str] = field(default_factory=list)
    refused: bool = False
    stored: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return " ".join(self.notes)


def _describe(model) -> dict:
    from .resume import model_description

    return model_description(model)


def _mismatch(recorded: Any, model) -> tuple[str | None, bool]:
    """(reason, weights_only) when the atlas's recorded model is not ``model``."""
    if not isinstance(recorded, dict) or not recorded:
        return None, False
    here = _describe(model)
    if recorded.get("class") and recorded["class"] != here["class"]:
        return (
            f"it was mined from a {recorded['class']}, not this {here['class']}",
            False,
        )
    if recorded.get("structure") and recorded["structure"] != here["structure"]:
        return "it was mined from a model with other layers or parameter shapes", False
    from .resume import parameters_match

    if recorded.get("parameters") and not parameters_match(
        recorded["parameters"], model, here.get("parameters")
    ):
        return "it was mined from this architecture with other weights", True
    return None, False


def open_atlas(
    atlas: Any,
    *,
    model,
    data: Any = None,
    transform: Any = None,
    layers: list[str] | None = None,
) -> OpenedAtlas:
    """The usable atlas among what the user passed, and notes (see the module docstring).

    Parameters
    ----------
    atlas : None, Atlas, or str / PathLike of an atlas folder (or single file)
    model : nn.Module
        The model the atlas must come from.
    data : optional
        The dataset the atlas was mined over (attached for layers that need computing).
    transform : optional
        Applied to PIL images of ``data``.
    layers : list of str, optional
        The layers the caller offers; those the atlas lacks are named in the notes.
    """
    from .core import Atlas

    if atlas is None:
        return OpenedAtlas(None)
    where = None
    if isinstance(atlas, (str, os.PathLike)):
        where = os.fspath(atlas)
        if not os.path.exists(where):
            return OpenedAtlas(
                None, [f"No atlas at {where!r}: mining the top-9 instead."], refused=True
            )
        try:
            loaded = Atlas.load(where, model=model, data=data, transform=transform)
        except (ValueError, OSError, TypeError) as e:
            return OpenedAtlas(
                None,
                [f"The atlas at {where!r} cannot be used ({e}); mining the top-9 instead."],
                refused=True,
            )
    elif isinstance(atlas, Atlas):
        loaded = atlas
        if loaded.model is None:
            loaded = loaded.attached(model, None)
    else:
        raise TypeError(
            f"atlas: expected an Atlas or the path of an atlas folder, got {type(atlas).__name__}"
        )
    recorded = loaded.provenance.get("model") if isinstance(loaded.provenance, dict) else None
    reason, weights_only = _mismatch(recorded, model)
    notes: list[str] = []
    name = repr(where) if where is not None else "given"
    if reason is not None and (where is not None or not weights_only):
        return OpenedAtlas(
            None,
            [f"The atlas {name} is not from this model: {reason}; mining the top-9 instead."],
            refused=True,
        )
    if reason is not None:
        notes.append(f"Note: {reason} (parameter hashes differ); its hits are shown as stored.")
    stored = [n for n in loaded.layers if loaded.has_images(n)]
    unrendered = [n for n in loaded.layers if n not in stored]
    if where is not None and unrendered:
        notes.append(
            "No stored tiles for " + ", ".join(unrendered) + ": their units are computed "
            "from the model."
        )
    if layers is not None:
        lacking = [n for n in layers if n not in loaded.layers]
        if lacking:
            notes.append(
                "Not in the atlas: " + ", ".join(lacking) + "; their top-9 is mined from the "
                "dataset when shown."
            )
    return OpenedAtlas(loaded, notes, stored=stored)
