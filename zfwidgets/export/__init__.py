"""A notebook as one self-contained HTML file that draws its zfwidgets widgets, offline.

``python -m zfwidgets html NB.ipynb NB.html [--execute]`` and ``jupyter nbconvert --to
zfwidgets NB.ipynb`` write nbconvert's JupyterLab HTML in which every zfwidgets widget is
drawn from the widget state saved in the notebook, by the same front-end code (our esbuild
bundles, inlined) the live widgets run, on a read-only model: hovering, switching among data
already in the state and the like work; what needs the kernel says so. Core ipywidgets
(boxes, labels, HTML, images, simple controls) are drawn read-only; other widgets show a
one-line note. Nothing is requested from outside the file.

- :func:`export_html`: the function behind both;
- :class:`ZFWidgetsExporter` (:mod:`.exporter`): the nbconvert exporter;
- :func:`page_state` (:mod:`.state`): the checks on the saved state (sizes before decoding,
  types, references), for untrusted notebooks.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from .exporter import ZFWidgetsExporter
from .state import PageState, page_state

__all__ = ["MAX_NOTEBOOK_BYTES", "PageState", "ZFWidgetsExporter", "export_html", "page_state"]

#: A notebook file larger than this is refused before it is read.
MAX_NOTEBOOK_BYTES = 1 << 30

#: Run in the kernel after the notebook's cells (then removed): waits, letting the kernel's
#: event loop run, until no zfwidgets widget has work under way three checks in a row, so the
#: saved state holds their results (a widget computes off the kernel thread and applies its
#: results on the loop: without this its last frames would be missing from the state), then
#: sends every widget's state again under this cell's header, which nbclient records.
_SETTLE = """\
async def __zf_settle(timeout):
    import asyncio, time, warnings
    import ipywidgets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        live = ipywidgets.Widget.widgets
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        busy = False
        for w in list(live.values()):
            if type(w).__module__.startswith("zfwidgets.") and callable(getattr(w, "wait", None)):
                try:
                    busy |= w.wait(0.05) is False
                except TimeoutError:
                    busy = True
                except Exception:
                    pass  # shown in the widget
        await asyncio.sleep(0.1)  # the kernel's loop applies what the jobs posted
        quiet = 0 if busy else quiet + 1
    # what a job applied went out under the header of the cell that started it; nbclient
    # records only messages of the cell it runs: send every widget's state again from here
    for w in list(live.values()):
        try:
            w.send_state()
        except Exception:
            pass
await __zf_settle({timeout})
del __zf_settle
"""


def _read(notebook: str | os.PathLike[str]) -> Any:
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise ValueError(f"notebook: expected a .ipynb file, got {str(notebook)!r} (no such file)")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise ValueError(
            f"notebook: expected a notebook of at most {MAX_NOTEBOOK_BYTES} bytes, "
            f"got {size} bytes in {str(notebook)!r}"
        )
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises several kinds for damaged JSON
        raise ValueError(
            f"notebook: {str(notebook)!r} is not a Jupyter notebook ({type(e).__name__}: "
            f"{str(e)[:200]})"
        ) from e


def execute(nb: Any, *, cwd: str | os.PathLike[str] | None = None, timeout: float = 600) -> Any:
    """Run every cell of ``nb`` in a fresh kernel (nbclient), saving the widget state in its
    metadata once the zfwidgets widgets' background work is applied. Modifies ``nb``."""
    import nbclient
    import nbformat

    settle = nbformat.v4.new_code_cell(_SETTLE.format(timeout=float(timeout)))
    nb.cells.append(settle)
    try:
        client = nbclient.NotebookClient(
            nb,
            timeout=timeout,
            store_widget_state=True,
            resources={"metadata": {"path": str(cwd or os.getcwd())}},
        )
        client.execute()
    finally:
        if nb.cells and nb.cells[-1] is settle:
            nb.cells.pop()
    return nb


def export_html(
    notebook: str | os.PathLike[str] | Any,
    out: str | os.PathLike[str] | None = None,
    *,
    execute_first: bool = False,
    timeout: float = 600,
) -> str:
    """Write (or return) a notebook as one self-contained HTML page that draws its widgets.

    Parameters
    ----------
    notebook
        A ``.ipynb`` path, or an nbformat v4 ``NotebookNode`` (not modified).
    out
        Where to write the page (UTF-8); None: only return it.
    execute_first
        Run the notebook first (nbclient, in its own folder), which saves the widget state;
        otherwise the state saved in the file is drawn (none saved: each widget shows a note).
    timeout
        Seconds one cell (and the final wait for the widgets' work) may take.

    Returns
    -------
    str
        The page.
    """
    import nbformat

    if isinstance(notebook, (str, os.PathLike)):
        nb = _read(notebook)
        cwd = Path(notebook).resolve().parent
    elif isinstance(notebook, nbformat.NotebookNode):
        nb = copy.deepcopy(notebook)
        cwd = Path.cwd()
    else:
        raise TypeError(
            f"notebook: expected a .ipynb path or an nbformat NotebookNode, got "
            f"{type(notebook).__name__}"
        )
    if not isinstance(execute_first, bool):
        raise TypeError(f"execute_first: expected a bool, got {type(execute_first).__name__}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    if out is not None:
        target = Path(out)
        if target.is_dir():
            raise ValueError(f"out: expected a file path, got the folder {str(out)!r}")
        if not target.parent.is_dir():
            raise ValueError(f"out: the folder {str(target.parent)!r} does not exist")
    if execute_first:
        execute(nb, cwd=cwd, timeout=timeout)
    name = Path(notebook).stem if isinstance(notebook, (str, os.PathLike)) else "Notebook"
    page, _ = ZFWidgetsExporter().from_notebook_node(nb, {"metadata": {"name": name}})
    if out is not None:
        Path(out).write_text(page, encoding="utf-8")
    return page
