"""The exported page (zfwidgets.export): one file, nothing from outside, the state embedded
safely, and the command line and nbconvert entry points. The page's drawing is tested in
js/test/export_page.test.js (happy-dom) and tests/browser/test_html_export_browser.py."""

from __future__ import annotations

import html.parser
import json
import re
import subprocess
import sys
from pathlib import Path

import ipywidgets as W
import nbformat
import pytest
import torch

from zfwidgets.cli import main
from zfwidgets.export import export_html
from zfwidgets.export.exporter import CSP, ZFWidgetsExporter, script_json
from zfwidgets.export.state import MIME
from zfwidgets.widgets.gallery import Gallery

REPO = Path(__file__).resolve().parents[2]
EVIL = '</script><script>window.zfXSS=1</script><!-- <img src=x onerror="zfXSS=2">'


class Scan(html.parser.HTMLParser):
    """The page's elements that could load or run something."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict] = []
        self.loads: list[str] = []
        self.handlers: list[str] = []
        self._in: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k, v in attrs:
            if k.startswith("on"):
                self.handlers.append(f"{tag} {k}")
            if k in ("src", "href") and v and not v.startswith(("data:", "#")):
                self.loads.append(f"{tag} {k}={v}")
        if tag == "script":
            self._in = {"type": a.get("type"), "id": a.get("id"), "text": ""}
            self.scripts.append(self._in)

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self._in["text"] += data


def scan(page: str) -> Scan:
    s = Scan()
    s.feed(page)
    return s


def notebook(
    state: dict | None, views: list[str], plain: str = "Widget(...)"
) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("w")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {
                    "model_id": v,
                    "version_major": 2,
                    "version_minor": 0,
                },
                "text/plain": plain,
            },
        )
        for v in views
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title <b>ok</b>"), cell]
    if state is not None:
        nb.metadata["widgets"] = {MIME: state}
    return nb


@pytest.fixture
def widgets():
    from ipywidgets.embed import dependency_state, embed_data

    torch.manual_seed(0)
    g = Gallery(torch.rand(2, 3, 8, 8), [EVIL, "two"], title=EVIL)
    label = W.Label(EVIL)
    box = W.VBox([g, label, W.HTML(EVIL)])
    state = dependency_state([box], drop_defaults=False)
    data = embed_data(views=[box], state=state, drop_defaults=False)["manager_state"]
    yield box, g, data
    for w in (box, label, g):
        w.close()


def page_data(page: str) -> tuple[dict, dict]:
    s = scan(page)
    by_id = {x["id"]: x for x in s.scripts if x["id"]}
    return json.loads(by_id["zf-export-state"]["text"]), json.loads(
        by_id["zf-export-bundles"]["text"]
    )


def test_the_page_is_one_file_that_loads_nothing(widgets):
    box, g, data = widgets
    page, resources = ZFWidgetsExporter().from_notebook_node(notebook(data, [box.model_id]))
    s = scan(page)
    assert s.loads == []  # no src= / href= to anything but data: and anchors
    assert not re.search(r"import\(\s*['\"]https?:", page)
    assert "cdnjs" not in page and "unpkg" not in page and "require.min.js" not in page
    assert f'content="{CSP}"' in page
    # three scripts of ours: the state, the bundles (JSON, never run) and the runtime
    assert [(x["type"], x["id"]) for x in s.scripts] == [
        ("application/json", "zf-export-state"),
        ("application/json", "zf-export-bundles"),
        (None, None),
    ]
    state, bundles = page_data(page)
    assert list(bundles) == ["gallery.js"]
    assert bundles["gallery.js"] == (REPO / "zfwidgets/static/gallery.js").read_text()
    assert set(state["models"]) >= {box.model_id, g.model_id}
    assert f'data-model-id="{box.model_id}"' in page
    assert resources["zfwidgets"]["notes"] == {}


def test_the_raw_state_and_the_widgets_own_code_are_not_copied(widgets):
    box, g, data = widgets
    page, _ = ZFWidgetsExporter().from_notebook_node(notebook(data, [box.model_id]))
    assert MIME not in page  # nbconvert's own copy of the state is left out
    assert '"_esm"' not in page and "_anywidget_id" not in page


def test_text_that_looks_like_html_stays_inside_its_script(widgets):
    """``</script>``, ``<!--`` and tags in traits cannot end the JSON element: the page has
    exactly the scripts the template writes, no event handler attribute, and the state
    round-trips to the same text."""
    box, g, data = widgets
    page, _ = ZFWidgetsExporter().from_notebook_node(notebook(data, [box.model_id], plain=EVIL))
    s = scan(page)
    assert len(s.scripts) == 3
    assert s.handlers == []
    assert "zfXSS" not in "".join(x["text"] for x in s.scripts[2:])
    state, _ = page_data(page)
    assert state["models"][g.model_id]["state"]["title"] == EVIL
    label = next(m for m in state["models"].values() if m.get("name") == "LabelModel")
    assert label["state"]["value"] == EVIL
    # the text/plain fallback is shown as text
    assert "&lt;/script&gt;&lt;script&gt;window.zfXSS=1" in page


def test_script_json_escapes_what_could_end_the_element():
    text = script_json({"a": "</script><!--&\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!--&\u2028"}


@pytest.mark.parametrize(
    "state, views",
    [
        (None, ["abc"]),  # no widget state saved
        (
            {
                "state": {
                    "abc": {"model_name": "FigureModel", "model_module": "bqplot", "state": {}}
                }
            },
            ["abc"],
        ),
        ({"state": "broken"}, ["abc"]),
        ({"state": {}}, ['x" onmouseover="zfXSS=1']),  # a view naming no plain id
        (
            {
                "state": {
                    "abc": {
                        "model_name": "LabelModel",
                        "model_module": "@jupyter-widgets/controls",
                        "state": {"value": 1.5},
                        "buffers": [{"path": ["value"], "data": "!!!!"}],
                    }
                }
            },
            ["abc"],
        ),
    ],
)
def test_bad_state_exports_without_error(state, views):
    page, _ = ZFWidgetsExporter().from_notebook_node(notebook(state, views))
    s = scan(page)
    assert len(s.scripts) == 3 and s.handlers == []
    assert "zf-export-view" in page


def test_a_view_whose_output_is_not_an_object(widgets):
    nb = notebook(None, [])
    nb.cells[1].outputs = [
        nbformat.v4.new_output(
            "display_data", data={"application/vnd.jupyter.widget-view+json": "</div>x"}
        )
    ]
    page, _ = ZFWidgetsExporter().from_notebook_node(nb)
    assert 'data-model-id=""' in page


def test_other_outputs_are_nbconvert_s(widgets):
    box, _, data = widgets
    nb = notebook(data, [box.model_id])
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    nb.cells[-1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello <b>\n")]
    page, _ = ZFWidgetsExporter().from_notebook_node(nb)
    assert "hello &lt;b&gt;" in page
    assert '<h1 id="Title-ok">Title <b>ok</b>' in page or "Title <b>ok</b>" in page
    assert "jp-OutputArea-output" in page


def test_export_html_writes_the_file_and_checks_its_arguments(widgets, tmp_path):
    box, _, data = widgets
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook(data, [box.model_id]), str(path))
    out = tmp_path / "nb.html"
    page = export_html(path, out)
    assert out.read_text(encoding="utf-8") == page
    assert "<title>nb</title>" in page
    with pytest.raises(ValueError, match="notebook: expected a .ipynb file"):
        export_html(tmp_path / "missing.ipynb")
    (tmp_path / "bad.ipynb").write_text("{not json")
    with pytest.raises(ValueError, match="is not a Jupyter notebook"):
        export_html(tmp_path / "bad.ipynb")
    with pytest.raises(TypeError, match="notebook: expected a .ipynb path or an nbformat"):
        export_html(42)
    with pytest.raises(ValueError, match="out: expected a file path"):
        export_html(path, tmp_path)
    with pytest.raises(ValueError, match="timeout: expected a positive"):
        export_html(path, timeout=0)
    nb = notebook(data, [box.model_id])
    before = json.dumps(nb, sort_keys=True)
    export_html(nb)
    assert json.dumps(nb, sort_keys=True) == before


def test_command_line(widgets, tmp_path, capsys):
    box, _, data = widgets
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook(data, [box.model_id]), str(path))
    assert main(["html", str(path), str(tmp_path / "out.html")]) == 0
    assert "zf-export-state" in (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "wrote" in capsys.readouterr().err
    assert main(["html", str(tmp_path / "nope.ipynb"), str(tmp_path / "o.html")]) == 2
    assert "zfwidgets html: error: notebook: expected a .ipynb file" in capsys.readouterr().err
    assert main(["html", str(path), str(tmp_path / "no" / "o.html")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_registered_as_an_nbconvert_exporter():
    """pyproject names the class, and nbconvert finds it under ``--to zfwidgets`` through the
    installed metadata (``make test`` reinstalls the package whenever pyproject changes)."""
    text = (REPO / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."nbconvert.exporters"]', 1)[1].split("[", 1)[0]
    assert 'zfwidgets = "zfwidgets.export.exporter:ZFWidgetsExporter"' in section
    from nbconvert.exporters import get_exporter

    assert get_exporter("zfwidgets") is ZFWidgetsExporter


def test_jupyter_nbconvert_runs_the_exporter(widgets, tmp_path):
    box, _, data = widgets
    path = tmp_path / "nb.ipynb"
    nbformat.write(notebook(data, [box.model_id]), str(path))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "zfwidgets.export.exporter.ZFWidgetsExporter",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "nb.html").read_text(encoding="utf-8")
    assert "zf-export-bundles" in page and "cdnjs" not in page


def test_execute_saves_the_widgets_finished_state(tmp_path):
    """``execute_first`` runs the notebook in a kernel and waits for the widgets' background
    work: the occlusion map's maps (computed off the kernel thread) are in the page."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch\nfrom torch import nn\nfrom zfwidgets import OcclusionMap\n"
            "torch.manual_seed(0)\n"
            "m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),"
            " nn.Flatten(), nn.Linear(4, 3)).eval()\n"
            "OcclusionMap(m, torch.rand(1, 3, 64, 64), window=8, stride=2)"
        )
    ]
    path = tmp_path / "occ.ipynb"
    nbformat.write(nb, str(path))
    page = export_html(path, tmp_path / "occ.html", execute_first=True, timeout=300)
    state, bundles = page_data(page)
    occ = [m for m in state["models"].values() if m.get("bundle") == "occlusion_map.js"]
    assert len(occ) == 1 and "occlusion_map.js" in bundles
    paths = {tuple(b["path"]) for b in occ[0]["buffers"]}
    assert ("frame", "probability", "view") in paths, paths  # the maps, not only the image
    assert occ[0]["state"]["busy"] is False
    assert len(nbformat.read(str(path), 4).cells) == 1  # the file itself is not changed


def test_a_plotly_figure_brings_plotly_js_inside_the_page():
    import plotly.graph_objects as go
    from ipywidgets.embed import dependency_state, embed_data

    fig = go.FigureWidget(data=[go.Scatter(x=[1, 2], y=[3, 4], name=EVIL)])
    try:
        state = dependency_state([fig], drop_defaults=False)
        data = embed_data(views=[fig], state=state, drop_defaults=False)["manager_state"]
        page, _ = ZFWidgetsExporter().from_notebook_node(notebook(data, [fig.model_id]))
    finally:
        fig.close()
    s = scan(page)
    assert len(s.scripts) == 3 and s.loads == [] and s.handlers == []
    _, bundles = page_data(page)
    assert list(bundles) == ["plotly.min.js"] and "Plotly" in bundles["plotly.min.js"][:4000]
