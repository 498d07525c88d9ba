"""Table 1: correspondence of object parts across images

Five bundled ankle boots, each with the same part occluded (the top, bottom, left or right
half): how consistently the occlusion changes the features of conv1 and of the penultimate fully
connected layer across the five images
(lower is more consistent), against random boxes of the same size (`zf.correspondence`):
what the `CorrespondenceTable` widget shows.
"""

import matplotlib.pyplot as plt

import zfwidgets as zf

d = zf.load_default()
images, labels = d.images.tensors()
x = images[labels == d.classes.index("Ankle boot")][:5]
parts = {
    "top half": (0, 0, 14, 28),
    "bottom half": (14, 0, 28, 28),
    "left half": (0, 0, 28, 14),
    "right half": (0, 14, 28, 28),
}
res = zf.correspondence(d.model, x, parts, n_random=10)
print(res)

rows = [
    [part]
    + [
        f"{res.score[part][layer]:.3f}  (random {res.random[part][layer]:.3f})"
        for layer in res.layers
    ]
    for part in res.score
]
fig, ax = plt.subplots(figsize=(3 + 3 * len(res.layers), 0.5 + 0.45 * len(rows)))
ax.axis("off")
table = ax.table(cellText=rows, colLabels=["occluded part"] + res.layers, loc="center")
table.scale(1, 1.5)
fig.tight_layout()
fig.savefig("table1-correspondence.png", dpi=110)
