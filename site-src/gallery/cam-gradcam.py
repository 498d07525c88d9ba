"""CAM and Grad-CAM

Grad-CAM (`zf.grad_cam`) of the bundled model at conv5 for its predicted class. CAM
(`zf.cam`) needs a network that ends in global average pooling and one linear layer, which the
bundled model does not: as in the CAM paper, such a head (GAP + linear) is fitted here on the
bundled model's conv5 maps of the 300 bundled images (a few seconds), and CAM is computed
for that network.
"""

import matplotlib.pyplot as plt
import torch
from torch import nn

import zfwidgets as zf
from zfwidgets.base.images import display_image

torch.manual_seed(0)
d = zf.load_default()
images, labels = d.images.tensors()

# conv1..conv5 of the bundled model (frozen), then global average pooling and one linear layer
gap_net = nn.Sequential(
    d.model.features[:14], nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
).eval()
for p in gap_net[0].parameters():
    p.requires_grad_(False)
with torch.no_grad():
    pooled = gap_net[2](gap_net[1](gap_net[0](images)))
head = gap_net[3]
opt = torch.optim.Adam(head.parameters(), lr=0.05)
for _ in range(300):
    loss = nn.functional.cross_entropy(head(pooled), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(f"GAP head: {(head(pooled).argmax(1) == labels).float().mean():.1%} of the bundled images")

picks = [60, 209, 90, 5, 31]
x = images[picks]
gc = zf.grad_cam(d.model, x, layer="features.12")
cm = zf.cam(gap_net, x)

fig, axes = plt.subplots(3, len(picks), figsize=(2.2 * len(picks), 6.6))
for n, i in enumerate(picks):
    picture = display_image(x[n : n + 1], [d.mean], [d.std])[0, 0].numpy()
    axes[0, n].imshow(picture, cmap="gray")
    axes[0, n].set_title(d.classes[int(labels[i])], fontsize=9)
    axes[1, n].imshow(picture, cmap="gray")
    axes[1, n].imshow(gc.upsampled[n].numpy(), cmap="jet", alpha=0.5)
    axes[2, n].imshow(picture, cmap="gray")
    axes[2, n].imshow(cm.upsampled[n].numpy(), cmap="jet", alpha=0.5)
axes[1, 0].set_ylabel("Grad-CAM, conv5")
axes[2, 0].set_ylabel("CAM, GAP head")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig("cam-gradcam.png", dpi=100)
