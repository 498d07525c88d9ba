"""Fig. 2: the top-9 activations of feature maps, projections beside patches

For three feature maps of each of the layers conv2 to conv5 of the bundled model, the 9
bundled images that excite the map most (from the bundled atlas, `zf.load_default_atlas()`):
on the left of each pair the deconvnet projections of the 9 hits, on the right the image
patches under their receptive fields, as in the paper's Fig. 2.
"""

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

import zfwidgets as zf
from zfwidgets.base.images import contrast_normalize, display_image

d = zf.load_default()
atlas = zf.load_default_atlas(d)
layers = {
    "features.4": "conv2",
    "features.8": "conv3",
    "features.10": "conv4",
    "features.12": "conv5",
}


def block(crops):
    """(9, C, h, w) in [0, 1] -> a 3x3 grid, (3, H, W)."""
    return make_grid(crops.expand(-1, 3, -1, -1), nrow=3, padding=1, pad_value=1.0)


def pick(layer, n=3):
    """The strongest maps whose hits are mostly of a class not picked yet (the paper shows a
    varied subset; the strongest maps alone are mostly trousers)."""
    picked, seen = [], set()
    for c in atlas.values[layer][:, 0].argsort(descending=True).tolist():
        major = int(labels[atlas.indices[layer][c]].mode().values)
        if major not in seen:
            picked.append(c)
            seen.add(major)
        if len(picked) == n:
            return picked
    return picked


labels = d.images.tensors()[1]
fig, axes = plt.subplots(len(layers), 3, figsize=(9, 2.4 * len(layers)))
for row, (layer, name) in enumerate(layers.items()):
    for col, channel in enumerate(pick(layer)):
        projections = contrast_normalize(atlas.reconstructions(layer, channel))
        patches = display_image(atlas.patches(layer, channel), [d.mean], [d.std])
        pair = make_grid(
            torch.stack([block(projections), block(patches)]), nrow=2, padding=4, pad_value=1.0
        )
        ax = axes[row, col]
        ax.imshow(pair.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"{name} ({layer}) map {channel}", fontsize=9)
        ax.axis("off")
fig.tight_layout()
fig.savefig("fig2-top9.png", dpi=110)
print(f"{len(d.images)} bundled images; atlas layers: {atlas.layers}")
