"""The t-SNE of the penultimate codes

The 128-d outputs of the penultimate fully connected layer for the 300 bundled images, embedded
in 2-d by t-SNE (`zf.embed`, scikit-learn), coloured by true class: what the `EmbeddingView`
widget plots (there, hovering a point shows its image).
"""

import matplotlib.pyplot as plt

import zfwidgets as zf

d = zf.load_default()
emb = zf.embed(d.model, d.images, method="tsne", perplexity=30, seed=0)
print(emb)

fig, ax = plt.subplots(figsize=(7, 6))
xy = emb.coords.numpy()
for c, name in enumerate(d.classes):
    mask = (emb.labels == c).numpy()
    ax.scatter(xy[mask, 0], xy[mask, 1], s=12, color=f"C{c}", label=name)
ax.legend(fontsize=8, markerscale=1.5, loc="best")
ax.set_title(f"t-SNE of {emb.layer} codes, {len(xy)} bundled images", fontsize=10)
ax.set_xticks([])
ax.set_yticks([])
fig.tight_layout()
fig.savefig("tsne-codes.png", dpi=100)
