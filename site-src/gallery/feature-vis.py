"""Feature visualisations of the bundled model

For three feature maps of each convolution of the bundled model (conv1 to conv5), the input
that `zf.feature_vis` optimises for the map (objective `"max"`, the default transformation
robustness, 512 Adam steps at `lr=0.1`: `feature_vis`'s defaults; all 15 maps take about 15 s
of one CPU core) beside the map's top-9 image patches from the bundled atlas
(`zf.load_default_atlas()`), as OpenAI Microscope shows a unit: what drives the map hardest,
then what in the data does. Each title gives the map's strongest activation on the optimised
input against its top-1 over the 300 bundled images. The model sees 28x28 grey images, so the
pictures are strokes and blobs at the scale of each map's receptive field, not the textures of
an ImageNet model; see [feature visualisation](../guide/feature-vis.md).
"""

import matplotlib.pyplot as plt
import torch

import zfwidgets as zf
from zfwidgets.base.images import display_image

STEPS = 512  # feature_vis's default; the caption above says how many
d = zf.load_default()
atlas = zf.load_default_atlas(d)
labels = d.images.tensors()[1]
layers = {
    "features.0": "conv1",
    "features.4": "conv2",
    "features.8": "conv3",
    "features.10": "conv4",
    "features.12": "conv5",
}


def pick(layer, n=3):
    """The strongest maps whose hits are mostly of a class not picked yet (as Fig. 2)."""
    picked, seen = [], set()
    for c in atlas.values[layer][:, 0].argsort(descending=True).tolist():
        major = int(labels[atlas.indices[layer][c]].mode().values)
        if major not in seen:
            picked.append(c)
            seen.add(major)
        if len(picked) == n:
            break
    return picked


def nine(crops):
    """(9, 1, h, w) in [0, 1] -> a 3x3 grid (3h + 2, 3w + 2), white between the tiles."""
    _, _, h, w = crops.shape
    grid = torch.ones(3 * h + 2, 3 * w + 2)
    for i, crop in enumerate(crops[:9, 0]):
        r, c = divmod(i, 3)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = crop
    return grid


# three (picture, top 9) pairs a row, a narrow empty column between the pairs
fig, axes = plt.subplots(
    len(layers),
    8,
    figsize=(10, 2.0 * len(layers)),
    gridspec_kw={"width_ratios": [1, 1, 0.12, 1, 1, 0.12, 1, 1], "wspace": 0.06, "hspace": 0.35},
)
for row, (layer, name) in enumerate(layers.items()):
    channels = pick(layer)
    fv = zf.feature_vis(
        d.model, layer, channels, steps=STEPS, mean=d.mean, std=d.std, progress=False
    )
    with torch.no_grad(), zf.capture(d.model, layers=[layer]) as cap:
        d.model(fv.inputs)
    reached = cap.activations[layer].amax((2, 3))  # (K, C): each map's strongest position
    for col, channel in enumerate(channels):
        ax_fv, ax_top = axes[row, 3 * col], axes[row, 3 * col + 1]
        ax_fv.imshow(
            fv.images[col, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest"
        )
        top1 = float(atlas.values[layer][channel, 0])
        ax_fv.set_title(
            f"{name} map {channel}\nmax {float(reached[col, channel]):.2f} (top-1 {top1:.2f})",
            fontsize=8,
            loc="left",
        )
        patches = display_image(atlas.patches(layer, channel), [d.mean], [d.std])
        ax_top.imshow(nine(patches).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax_top.set_title("top 9 patches", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01)
fig.savefig("feature-vis.png", dpi=110)
print(f"zf.feature_vis: {STEPS} steps, {len(layers)} layers x 3 maps; atlas k={atlas.k}")
