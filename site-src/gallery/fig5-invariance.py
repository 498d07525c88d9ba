"""Fig. 5: invariance to translation, scale and rotation

For five bundled images, how far the features of conv1 and of the penultimate fully connected
layer move (distance to the untransformed image's features, relative to their norm) and the
probability of the true class, as the images are shifted vertically, rescaled and rotated
(`zf.invariance`): what the `InvarianceCurves` widget plots.
"""

import matplotlib.pyplot as plt

import zfwidgets as zf

d = zf.load_default()
images, labels = d.images.tensors()
x, y = images[:5], labels[:5]

fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
for col, transform in enumerate(["translate", "scale", "rotate"]):
    res = zf.invariance(d.model, x, transform=transform, target=y)
    amounts = res.amounts.numpy()
    for n in range(len(x)):
        for layer, ls in zip(res.layers, ["-", "--"]):
            axes[0, col].plot(
                amounts,
                res.distance[layer][n].numpy(),
                ls,
                color=f"C{n}",
                label=f"{layer}" if n == 0 else None,
            )
        axes[1, col].plot(
            amounts, res.probability[n].numpy(), color=f"C{n}", label=d.classes[int(y[n])]
        )
    axes[0, col].set_title(
        f"{transform}: feature distance (- {res.layers[0]}, -- {res.layers[1]})", fontsize=9
    )
    axes[1, col].set_title(f"{transform}: p(true class)", fontsize=9)
    axes[1, col].set_ylim(0, 1.02)
    unit = {"translate": "pixels", "scale": "factor", "rotate": "degrees"}[transform]
    axes[1, col].set_xlabel(unit)
axes[1, 0].legend(fontsize=7)
fig.tight_layout()
fig.savefig("fig5-invariance.png", dpi=100)
