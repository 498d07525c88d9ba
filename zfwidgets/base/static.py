"""Where the built front-end files live: ``zfwidgets/static/``.

esbuild writes the widgets' ES modules and ``style.css`` there, and the atlas site's bundles in
``static/site/`` (``make build-js`` / ``npm run build`` in a checkout; released wheels ship
them). The widgets (:mod:`zfwidgets.widgets._base`) and the static atlas site
(:mod:`zfwidgets.atlas.site`) both find their files here.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STATIC", "bundle_path", "built"]

#: Where esbuild writes the front-end bundles.
STATIC = Path(__file__).resolve().parent.parent / "static"


def built(name: str) -> Path | None:
    """The path of ``name`` (relative to ``zfwidgets/static/``, e.g. ``"site/zfsite.js"``)
    when it is built, else None."""
    path = STATIC / name
    return path if path.is_file() else None


def bundle_path(name: str) -> Path:
    """The path of a built front-end file in ``zfwidgets/static/``.

    Raises
    ------
    FileNotFoundError
        When the file is missing, saying how to build it.
    """
    path = built(name)
    if path is None:
        raise FileNotFoundError(
            f"zfwidgets: the front-end bundle {STATIC / name} is missing. Build it from the "
            "repository root with `make build-js` (or `npm install && npm run build`); "
            "`make test` and `pip install .` build it too, and released wheels ship it."
        )
    return path
