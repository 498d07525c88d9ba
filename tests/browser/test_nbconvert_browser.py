"""What a notebook with zfwidgets shows once exported to HTML (``jupyter nbconvert --to html``
with the widget state saved), opened in headless Chromium with no network.

The export saves the widgets' state in the page, but draws nothing by itself: it loads
require.js from cdnjs and the widget manager from unpkg (``@jupyter-widgets/html-manager``),
which would then have to fetch our front end (anywidget's module) from the CDN too; anywidget
widgets do not render that way (anywidget #339, #343). This test pins that down for plain
``--to html``, which stays as nbconvert makes it; ``python -m zfwidgets html`` / ``jupyter
nbconvert --to zfwidgets`` (zfwidgets.export) draw the same notebook offline, tested in
test_html_export_browser.py. The README says both.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_exported_notebook_draws_no_widget_offline(browser_context, tmp_path):
    import nbclient
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import zfwidgets as zf\n"
            "d = zf.load_default()\n"
            "x = d.images[0][0].unsqueeze(0)\n"
            "zf.LayerGrid(d.model, x, 'features.4', mean=[d.mean], std=[d.std])"
        )
    ]
    nbclient.NotebookClient(nb, store_widget_state=True, timeout=300).execute()
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    ours = [k for k, v in state.items() if v["model_module"] == "anywidget"]
    assert len(ours) == 1  # the grid's last state is in the notebook...
    html, _ = HTMLExporter().from_notebook_node(nb)
    path = tmp_path / "exported.html"
    path.write_text(html, encoding="utf-8")
    assert ours[0] in html  # ...and in the page

    page = browser_context.new_page()
    outside = []

    def gate(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        page.route("**/*", gate)
        with page.expect_event("requestfailed", lambda r: "html-manager" in r.url):
            page.goto(path.as_uri())
        page.wait_for_function("() => document.readyState === 'complete'")
        # the page needs two CDNs to draw any widget, so offline it draws none of ours
        assert any("require" in u and "cdnjs" in u for u in outside), outside
        assert any("unpkg.com/@jupyter-widgets/html-manager" in u for u in outside), outside
        cells = page.locator(".jupyter-widgets.jp-OutputArea-output")
        expect(cells).to_have_count(1)
        expect(cells.first.locator("canvas")).to_have_count(0)
        expect(page.locator("[class*='zf-']")).to_have_count(0)
        expect(cells.first).to_have_text(re.compile(r"^\s*$"), use_inner_text=True)
    finally:
        page.close()
