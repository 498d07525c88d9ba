"""``jupyter nbconvert --to zfwidgets NB.ipynb``: nbconvert's HTML, with the widgets drawn.

:class:`ZFWidgetsExporter` is nbconvert's :class:`~nbconvert.HTMLExporter` (JupyterLab
template) with four changes, so the page is one file that needs nothing else:

- the widget state is checked and cut down (:func:`zfwidgets.export.state.page_state`) and
  embedded as JSON that cannot end its ``<script>`` element (``<``, ``>``, ``&`` escaped);
- our widget bundles (``zfwidgets/static/*.js``, the code the live widgets run) and
  ``style.css`` are inlined, with the page's runtime (``static/export/page.js``, built from
  ``js/export/page.js``) that draws every widget view from the state;
- nothing is loaded from a CDN: no require.js, no widget manager, no MathJax or mermaid;
  a Content-Security-Policy forbids the browser any request outside the file;
- the raw widget state (with every widget's ``_esm`` code) is not copied into the page.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from nbconvert.exporters.html import HTMLExporter

from ..base.static import bundle_path
from .state import MIME, PLOTLY_BUNDLE, page_state

__all__ = ["CSP", "TEMPLATES", "ZFWidgetsExporter", "script_json"]

#: Where the exporter's nbconvert template (``zfwidgets/``) lives.
TEMPLATES = Path(__file__).resolve().parent / "templates"

#: The page may run its own inline scripts and modules from blob: URLs it makes, use inline
#: styles and data:/blob: images, and request nothing else.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; media-src data: blob:; connect-src 'none'; "
    "base-uri 'none'; form-action 'none'"
)

_MODEL_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")


def script_json(value: Any) -> str:
    """``value`` as JSON that is safe inside ``<script type="application/json">``: ASCII,
    with ``<``, ``>`` and ``&`` written as ``\\u003c`` ... so no text (``</script>``,
    ``<!--``) can end or change the element."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline(name: str, closing: str) -> str:
    text = bundle_path(name).read_text(encoding="utf-8")
    low = text.lower()
    if closing in low or "<!--" in low:
        raise RuntimeError(
            f"zfwidgets: the built file {name} contains {closing!r} or '<!--' and cannot be "
            "inlined in a page; rebuild it with `npm run build`"
        )
    return text


def _bundle(name: str) -> str | None:
    """The text of a bundle the page loads (inside JSON: any text is safe there); plotly.js
    from the plotly package, None when it is not installed (those figures show a note)."""
    if name == PLOTLY_BUNDLE:
        spec = importlib.util.find_spec("plotly")
        origin = Path(spec.origin).parent if spec and spec.origin else None
        path = origin / "package_data" / "plotly.min.js" if origin else None
        return path.read_text(encoding="utf-8") if path and path.is_file() else None
    return bundle_path(name).read_text(encoding="utf-8")


def model_id(view: Any) -> str:
    """The model id of a widget-view output, or "" when it is not a plain id."""
    mid = view.get("model_id") if isinstance(view, dict) else None
    return mid if isinstance(mid, str) and _MODEL_ID.fullmatch(mid) else ""


_VIEW = "application/vnd.jupyter.widget-view+json"


def _views_only(nb: Any) -> Any:
    """A copy of ``nb`` for nbconvert's template: each widget-view output holds only a checked
    ``model_id`` ("" when it had none), and the widget state only names those ids, so every
    view is drawn by our page (or shows its note) instead of falling back to text, and
    nbconvert never reads the saved state itself."""
    nb = copy.deepcopy(nb)
    ids = set()
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            data = output.get("data") if isinstance(output, dict) else None
            if isinstance(data, dict) and _VIEW in data:
                mid = model_id(data[_VIEW])
                data[_VIEW] = {"model_id": mid, "version_major": 2, "version_minor": 0}
                ids.add(mid)
    nb.metadata["widgets"] = {
        MIME: {"version_major": 2, "version_minor": 0, "state": {i: {} for i in ids}}
    }
    return nb


class ZFWidgetsExporter(HTMLExporter):
    """nbconvert's HTML exporter, self-contained, drawing zfwidgets widgets from their state.

    Registered as the nbconvert exporter ``zfwidgets``; ``python -m zfwidgets html`` uses it.
    """

    export_from_notebook = "HTML with zfwidgets widgets"

    # traitlets reads ``_<name>_default`` methods as the traits' defaults (our template, found
    # in TEMPLATES); set in __init__ instead, they would come after the template is loaded
    def _template_name_default(self) -> str:
        return "zfwidgets"

    def _extra_template_basedirs_default(self) -> list[str]:
        return [str(TEMPLATES), os.getcwd()]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_filter("zf_model_id", model_id)

    def from_notebook_node(  # type: ignore[override]
        self, nb: Any, resources: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[str, dict[str, Any]]:
        """The page for ``nb`` (and nbconvert's resources, with ``resources["zfwidgets"]``:
        the embedded parts and ``notes``, model id -> why that widget is not drawn)."""
        state = page_state(getattr(nb, "metadata", None))
        nb = _views_only(nb)
        resources = dict(resources or {})
        names = [*state.bundles]
        resources["zfwidgets"] = {
            "csp": CSP,
            "css": _inline("style.css", "</style") + "\n" + _inline("export/page.css", "</style"),
            "state": script_json({"models": state.models, "summary": state.summary}),
            "bundles": script_json({n: t for n in names if (t := _bundle(n)) is not None}),
            "runtime": _inline("export/page.js", "</script"),
            "notes": state.notes,
            "summary": state.summary,
        }
        return super().from_notebook_node(nb, resources, **kw)
