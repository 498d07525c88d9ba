"""The layer views: first-layer filters and every feature map of a layer

What the `FilterGrid` and `LayerGrid` widgets draw, computed with the engine: the 16 filters
of conv1 (`zf.filters`, paper Fig. 6), then, for one bundled image, every feature map of
conv1, conv2 and conv5 (`zf.capture`), each map scaled to its own maximum.
"""

import matplotlib.pyplot as plt
from torchvision.utils import make_grid

import zfwidgets as zf
from zfwidgets.base.images import display_image

d = zf.load_default()
images, labels = d.images.tensors()
x = images[209:210]  # a sneaker
layers = {"features.1": "conv1 (after ReLU)", "features.5": "conv2", "features.13": "conv5"}

with zf.capture(d.model, layers=list(layers)) as cap:
    d.model(x)

fig, axes = plt.subplots(
    1,
    2 + len(layers),
    figsize=(14, 3.6),
    gridspec_kw={"width_ratios": [0.6, 1] + [1.4] * len(layers)},
)
axes[0].imshow(display_image(x, [d.mean], [d.std])[0, 0], cmap="gray")
axes[0].set_title(f"the image ({d.classes[int(labels[209])]})", fontsize=9)
filters = zf.filters(d.model)  # (16, 1, 5, 5) in [0, 1]
axes[1].imshow(
    make_grid(filters, nrow=4, padding=1, pad_value=1.0)[0], cmap="gray", interpolation="nearest"
)
axes[1].set_title("conv1 filters (zf.filters)", fontsize=9)
for ax, (layer, name) in zip(axes[2:], layers.items()):
    maps = cap.activations[layer][0]  # (C, h, w)
    maps = maps / maps.amax((1, 2), keepdim=True).clamp_min(1e-8)
    grid = make_grid(maps[:, None], nrow=8, padding=1, pad_value=1.0)[0]
    ax.imshow(grid.cpu().numpy(), cmap="viridis", interpolation="nearest")
    ax.set_title(f"{name}: {maps.shape[0]} maps {tuple(maps.shape[1:])}", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
fig.savefig("layer-views.png", dpi=110)
