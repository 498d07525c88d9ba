"""Fig. 7: the three occlusion maps

A grey square slides over three bundled images (an ankle boot, a sneaker, trousers); at each
position one forward pass gives (a) the total activation of the image's strongest conv5 feature
map, (b) the probability of the true class and (c) the most probable class (`zf.occlusion`,
one batched sweep): what the `OcclusionMap` widget shows.
"""

import matplotlib.pyplot as plt
import numpy as np

import zfwidgets as zf
from zfwidgets.base.images import display_image

d = zf.load_default()
images, labels = d.images.tensors()
picks = [60, 209, 90]
x = images[picks]
res = zf.occlusion(d.model, x, target=labels[picks], window=6, stride=2)
print(res)

fig, axes = plt.subplots(len(picks), 4, figsize=(11, 2.9 * len(picks)))
cmap = plt.get_cmap("tab10")
for n, i in enumerate(picks):
    axes[n, 0].imshow(display_image(x[n : n + 1], [d.mean], [d.std])[0, 0], cmap="gray")
    axes[n, 0].set_title(d.classes[int(labels[i])], fontsize=9)
    im = axes[n, 1].imshow(res.activation[n].numpy(), cmap="viridis")
    axes[n, 1].set_title(f"(a) {res.layer} map {int(res.channel[n])}", fontsize=9)
    fig.colorbar(im, ax=axes[n, 1], fraction=0.046)
    im = axes[n, 2].imshow(res.probability[n].numpy(), cmap="magma", vmin=0, vmax=1)
    axes[n, 2].set_title("(b) p(true class)", fontsize=9)
    fig.colorbar(im, ax=axes[n, 2], fraction=0.046)
    top = res.top_class[n].numpy()
    axes[n, 3].imshow(top, cmap=cmap, vmin=-0.5, vmax=9.5)
    axes[n, 3].set_title("(c) most probable class", fontsize=9)
    for c in np.unique(top):
        r, k = np.argwhere(top == c)[0]
        axes[n, 3].text(
            k,
            r,
            d.classes[c],
            fontsize=6,
            color="white",
            bbox={"facecolor": "black", "alpha": 0.5, "pad": 1},
        )
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
fig.savefig("fig7-occlusion.png", dpi=100)
