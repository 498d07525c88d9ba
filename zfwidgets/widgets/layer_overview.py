"""LayerOverview: every feature map of a layer at once, from an atlas (the paper's Fig. 2 for a
whole layer), a page at a time; a click opens the unit in a linked TopNine.

docs/method.md Sec. 3.1. Each unit is shown by its strongest deconvnet reconstruction or by
its top-k mosaic (reconstructions or image patches), paged for wide layers and sorted by index
or by strength. A page is one uint8 image in one transfer (:func:`zfwidgets.atlas.overview.overview_page`):
read from the atlas's stored tiles, or computed from the attached model and data for a layer
the atlas did not render (the widget says which). Pages are computed through the widget's job
runner (:mod:`zfwidgets.widgets._jobs`): off the kernel thread, the latest request wins, the
result applied on the kernel's event loop, errors shown in the widget.
"""

from __future__ import annotations

import os
from typing import Any

import traitlets as t

from ..atlas.core import Atlas
from ..atlas.overview import SHOWS, SORTS, overview_page
from ..base.codec import pack
from ._base import ZFWidget
from ._jobs import Runner, running_loop

__all__ = ["LayerOverview"]


def _as_atlas(atlas: Any, model: Any, data: Any) -> Atlas:
    if isinstance(atlas, Atlas):
        if model is not None or data is not None:
            return atlas.attached(model if model is not None else atlas.model, data)
        return atlas
    if isinstance(atlas, (str, os.PathLike)):
        return Atlas.load(atlas, model=model, data=data)
    raise TypeError(
        f"atlas: expected a zfwidgets.Atlas or the path of an atlas folder, got {type(atlas).__name__}"
    )


class LayerOverview(ZFWidget):
    """Every unit of an atlas layer as a thumbnail, paged; click a unit to select it.

    Parameters
    ----------
    atlas : Atlas or path
        An atlas (``zf.mine(...)``) or an atlas folder (``atlas.save("atlas/")``).
    layer : str, optional
        The layer shown first (default: the atlas's first).
    model, data : optional
        Attach them to compute thumbnails of layers the atlas has no tiles for.
    sort : {"index", "strength"}
    show : {"strongest", "reconstructions", "patches"}
        Each unit's strongest reconstruction, or its top-k mosaic of reconstructions or patches.
    page_size : int
        Units per page (default 64).
    side : int
        Thumbnail side in pixels.

    Attributes
    ----------
    selected : int or None
        The unit last clicked (a channel of ``layer``); :meth:`link` follows it with a TopNine.
    """

    _bundle = "layer_overview.js"

    layers = t.List(t.Unicode()).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    sort = t.Unicode("index").tag(sync=True)
    show = t.Unicode("strongest").tag(sync=True)
    page = t.Int(0).tag(sync=True)
    pages = t.Int(1).tag(sync=True)
    page_size = t.Int(64).tag(sync=True)
    frame = t.Dict().tag(sync=True)
    selected = t.Int(None, allow_none=True).tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    note = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    max_width = t.Int(720).tag(sync=True)

    def __init__(
        self,
        atlas: Any,
        layer: str | None = None,
        *,
        model: Any = None,
        data: Any = None,
        sort: str = "index",
        show: str = "strongest",
        page_size: int = 64,
        side: int = 64,
        max_width: int = 720,
        **kwargs: Any,
    ) -> None:
        self._atlas = _as_atlas(atlas, model, data)
        if isinstance(side, bool) or not isinstance(side, int) or side < 4:
            raise ValueError(f"side: expected an int >= 4, got {side!r}")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size: expected a positive int, got {page_size!r}")
        self._side = side
        self._runner = Runner(f"zfwidgets.LayerOverview-{id(self):x}")
        self._ready = False
        self._links: list[Any] = []
        layer = self._atlas.layers[0] if layer is None else layer
        self._check_layer(layer)
        self._check(sort, SORTS, "sort")
        self._check(show, SHOWS, "show")
        super().__init__(
            layers=list(self._atlas.layers),
            layer=layer,
            sort=sort,
            show=show,
            page_size=page_size,
            max_width=max_width,
            **kwargs,
        )
        self._redraw()
        self._ready = True

    @property
    def atlas(self) -> Atlas:
        """The atlas shown."""
        return self._atlas

    # -- checks ----------------------------------------------------------------------------------
    def _check_layer(self, layer: object) -> str:
        if not isinstance(layer, str) or layer not in self._atlas.layers:
            raise ValueError(f"layer: expected one of {self._atlas.layers}, got {layer!r}")
        return layer

    @staticmethod
    def _check(value: object, allowed: tuple[str, ...], name: str) -> str:
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")
        return str(value)

    @t.validate("layer")
    def _validate_layer(self, proposal: dict) -> str:
        return self._check_layer(proposal["value"])

    @t.validate("sort")
    def _validate_sort(self, proposal: dict) -> str:
        return self._check(proposal["value"], SORTS, "sort")

    @t.validate("show")
    def _validate_show(self, proposal: dict) -> str:
        return self._check(proposal["value"], SHOWS, "show")

    @t.validate("page")
    def _validate_page(self, proposal: dict) -> int:
        return max(0, int(proposal["value"]))

    # -- drawing ---------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest page is drawn; False when ``timeout`` ran out first."""
        return self._runner.join(timeout)

    def _redraw(self) -> None:
        """Compute the page the traits ask for (through the runner) and send it; errors go to
        ``error``."""
        atlas, side = self._atlas, self._side
        layer, page, size, sort, show = (
            self.layer,
            self.page,
            self.page_size,
            self.sort,
            self.show,
        )

        def work(job):
            p = overview_page(
                atlas, layer, page=page, page_size=size, sort=sort, show=show, side=side
            )
            return p, pack({"atlas": p.image})

        def error(e: BaseException) -> None:
            with self.hold_sync():
                self.frame = {}
                self.error = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
                self.caption = ""

        self._runner.submit(work, self._apply, error=error)
        if running_loop() is None:  # plain Python: drawn when this returns, errors in `error`
            self._runner.join()

    def _apply(self, result) -> None:
        p, payloads = result
        notes = []
        if p.source == "computed":
            notes.append(
                f"{p.layer} has no stored tiles: these thumbnails were computed from the model"
            )
        if p.missing:
            notes.append(f"{len(p.missing)} tile file(s) missing: units {p.missing[:10]}")
        ready, self._ready = self._ready, False
        try:
            with self.hold_sync():
                self.pages = p.pages
                if self.page != p.page:
                    self.page = p.page
                self.frame = {
                    "layer": p.layer,
                    "grid": p.layout.to_json(),
                    "units": p.units,
                    "values": p.values,
                    "page": p.page,
                    **payloads,
                }
                self.error = ""
                self.note = "; ".join(notes)
                C = int(self._atlas.values[p.layer].shape[0])
                self.caption = (
                    f"{p.layer} · {C} units · page {p.page + 1} of {p.pages} · by {self.sort}"
                    " · click a unit"
                )
        finally:
            self._ready = ready

    @t.observe("layer", "sort", "show", "page", "page_size")
    def _on_view(self, change: dict) -> None:
        if not self._ready:
            return
        if change["name"] in ("layer", "sort", "page_size") and self.page != 0:
            self._ready = False
            try:
                self.page = 0
            finally:
                self._ready = True
        if change["name"] == "layer":
            self.selected = None
        self._redraw()

    # -- linking ---------------------------------------------------------------------------------
    def select(self, channel: int) -> None:
        """Select ``channel`` of the current layer, as a click does."""
        C = int(self._atlas.values[self.layer].shape[0])
        if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < C:
            raise ValueError(f"channel: expected an int in [0, {C}), got {channel!r}")
        self.selected = channel

    def link(self, top_nine: Any) -> LayerOverview:
        """Open every unit clicked here in ``top_nine`` (a TopNine: its layer, then its
        channel). Returns ``self``."""

        def follow(change: dict) -> None:
            c = change["new"]
            if c is None:
                return
            if top_nine.layer != self.layer:
                top_nine.layer = self.layer
            top_nine.channel = c

        self.observe(follow, "selected")
        self._links.append(follow)
        return self
