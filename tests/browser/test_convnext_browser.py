"""The Explorer on ConvNeXt-Tiny (GELU, LayerNorm, no max-pooling) in stock Voila (issue 14).

``Explorer(convnext_tiny(weights=None))`` on the bundled photos at 96x96 (random weights,
seeded; layer scales set to 1 and torch's default init so the blocks contribute). A click on
a feature map draws the unit's deconvnet and guided projections; the occlusion widget's
"deconvnet" view differs from its "saliency" view (on GELU networks the two used to be the
same); the page is saved to docs/screenshot-convnext-deconvnet.png for the README.
"""

from __future__ import annotations

import io

import pytest
from harness import REPO, App, open_app
from playwright.sync_api import expect
from test_explorer_browser import (
    GRID,
    GRID_READY,
    HEAT,
    OCC_IDLE,
    ROOT,
    TAG,
    TOP,
    UNIT,
    click_tile,
    still,
    tall,
)

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = REPO / "docs" / "screenshot-convnext-deconvnet.png"
LAYER = "features.3.2.block.0"  # stage 2's last depthwise conv: 192 maps

NOTEBOOK = [
    f"""\
import torch
import torchvision
from torch import nn
from torchvision import transforms

from zfwidgets import Explorer

torch.manual_seed(0)
model = torchvision.models.convnext_tiny(weights=None).eval()
for m in model.modules():  # torch's default init instead of ConvNeXt's std-0.02 normal
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        m.reset_parameters()
for name, p in model.named_parameters():
    if name.endswith("layer_scale"):  # 1e-6 at init: the blocks would hardly contribute
        nn.init.ones_(p)
transform = transforms.Compose([
    transforms.Resize(96),
    transforms.CenterCrop(96),
    transforms.ToTensor(),
    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])
ex = Explorer(
    model, transform=transform, layers=["features.1.2.block.0", {LAYER!r}], feature_vis=False
)
""",
    TAG,
]


def view(app: App, name: str) -> dict:
    """Show the occlusion widget's ``name`` view; the heatmap's pixels once it is drawn."""
    app.page.click(f'{ROOT} button.zf-occ-view[data-view="{name}"]')
    app.wait(
        "const c = document.querySelector(arg[0]); return c.dataset.view === arg[1]",
        [HEAT, name],
        timeout_s=30,
    )
    return app.pixels(HEAT)


@pytest.fixture(scope="module")
def app(voila_server, browser_context):
    """One page for the module (its one test)."""
    with open_app(
        browser_context,
        voila_server,
        GRID_READY + " && document.querySelector(arg[2])?.dataset.status === 'ready'",
        [GRID, LAYER, TOP],
        timeout_s=240,
    ) as application:
        yield application


def test_convnext_deconvnet_view(app, artifacts):
    unit_before = app.pixels(UNIT)
    click_tile(app, GRID, 5)
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "return Number(c.dataset.count) >= 3 && Number(c.dataset.draws) > arg[1]",
        [UNIT, unit_before["draws"]],
        timeout_s=90,
    )
    expect(app.at(".zf-test-unit .zf-caption")).to_contain_text(f"{LAYER} · channel 5")
    unit = app.pixels(UNIT)
    assert unit["colours"] > 10, unit
    app.wait(OCC_IDLE, HEAT, timeout_s=240)
    # the attribution views are of the selected unit; wait until the widget offers them
    app.wait(
        "return !!document.querySelector(arg)",
        f'{ROOT} button.zf-occ-view[data-view="deconvnet"]',
        timeout_s=90,
    )
    saliency = view(app, "saliency")
    guided = view(app, "guided backprop")
    deconv = view(app, "deconvnet")
    assert deconv["opaque"] > 0 and deconv["colours"] > 5, deconv
    assert len({saliency["hash"], guided["hash"], deconv["hash"]}) == 3, "views are the same"
    still(app)
    save_screenshot(app)
    app.shot(artifacts, "explorer-convnext-deconvnet.png", ROOT)
    assert not app.errors, app.errors


def save_screenshot(app: App) -> None:
    """The whole Explorer, cropped to what it draws (plus a margin), under 300 KB."""
    from PIL import Image, ImageChops, ImageOps

    with tall(app):
        png = app.page.locator(ROOT).first.screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    ink = ImageChops.difference(img, Image.new("RGB", img.size, "white")).getbbox()
    if ink:
        img = ImageOps.expand(img.crop(ink), border=12, fill="white")
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    # random weights draw noisy maps, which compress badly: a 256-colour palette if needed
    done = False
    for width in (img.width, 900, 760, 640):
        width = min(width, img.width)
        small = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        for version in (small, small.quantize(256, dither=Image.Dither.NONE)):
            version.save(DOCS_SCREENSHOT, optimize=True)
            done = DOCS_SCREENSHOT.stat().st_size < 300_000
            if done:
                break
        if done:
            break
    assert DOCS_SCREENSHOT.stat().st_size < 300_000, DOCS_SCREENSHOT.stat().st_size
