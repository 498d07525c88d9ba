"""Fig. 4: the evolution of features over training

For two feature maps of each of conv1, conv2, conv3 and conv5, the strongest activation over the
bundled images at each bundled checkpoint (the paper's epochs 1, 2, 5, 10, 20, 30, 40 and 64
mapped onto the training schedule), projected to pixel space by the deconvnet: what the
`EvolutionSlider` steps through.
"""

import copy

import matplotlib.pyplot as plt

import zfwidgets as zf
from zfwidgets.base.images import contrast_normalize

d = zf.load_default()
units = [
    ("features.0", 3),
    ("features.0", 9),
    ("features.4", 2),
    ("features.4", 25),
    ("features.8", 49),
    ("features.8", 2),
    ("features.12", 1),
    ("features.12", 22),
]
layers = sorted({layer for layer, _ in units}, key=[u[0] for u in units].index)
model = copy.deepcopy(d.model)

columns = []
for epoch, state in d.checkpoints:
    model.load_state_dict(state)
    atlas = zf.mine(model, d.images, layers=layers, k=1, progress=False)
    column = [contrast_normalize(atlas.reconstructions(layer, c))[0, 0] for layer, c in units]
    columns.append((epoch, column))

fig, axes = plt.subplots(len(units), len(columns), figsize=(1.1 * len(columns), 1.2 * len(units)))
for j, (epoch, column) in enumerate(columns):
    axes[0, j].set_title(f"epoch {epoch}", fontsize=8)
    for i, tile in enumerate(column):
        axes[i, j].imshow(tile.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[i, j].set_xticks([])
        axes[i, j].set_yticks([])
for i, (layer, c) in enumerate(units):
    axes[i, 0].set_ylabel(f"{layer}\nmap {c}", fontsize=7)
fig.tight_layout()
fig.savefig("fig4-evolution.png", dpi=110)
print("checkpoints (paper epoch):", [e for e, _ in d.checkpoints])
