"""The static atlas site: bytes beyond the tiles, and the time to write it.

An atlas the size of AlexNet's five conv layers (64 + 192 + 384 + 256 + 256 units, k = 9) over
ImageNet-train (image indices up to 1.28 M, 1,000 classes with torchvision's names) is made from
random hits (no model runs: the site's own bytes depend on the number of hits, not on what they
show) and exported with ``atlas.export_site``. Printed: the page, bundles, manifest and hit
files in bytes (everything but the tiles, which are the atlas's own files, hard-linked), per hit,
and the export time; then the same for the bundled model's atlas, rendered.

    python benchmarks/bench_site.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def alexnet_sized(root: Path) -> dict:
    import torch
    import torchvision

    from zfwidgets.atlas.core import Atlas
    from zfwidgets.engine.receptive import ReceptiveField

    g = torch.Generator().manual_seed(0)
    k, n = 9, 1_281_167
    layers = {"features.0": 64, "features.3": 192, "features.6": 384, "features.8": 256}
    layers["features.10"] = 256
    out = {"features.0": 55, "features.3": 27, "features.6": 13, "features.8": 13}
    out["features.10"] = 13
    values, indices, positions, fields = {}, {}, {}, {}
    for name, C in layers.items():
        v = torch.rand(C, k, generator=g) * 20
        values[name] = v.sort(1, descending=True).values
        indices[name] = torch.randint(0, n, (C, k), generator=g)
        positions[name] = torch.randint(0, out[name], (C, k, 2), generator=g)
        s = out[name]
        fields[name] = ReceptiveField(
            layer=name,
            input_size=(224, 224),
            output_size=(s, s),
            stride=(4, 4),
            offset=(0, 0),
            size=(67, 67),
            is_global=False,
            rows=tuple((0, 224) for _ in range(s)),
            cols=tuple((0, 224) for _ in range(s)),
        )
    atlas = Atlas(
        layers=list(layers),
        k=k,
        values=values,
        indices=indices,
        positions=positions,
        fields=fields,
        input_size=(224, 224),
        provenance={"data": {"n": n}, "model": {"class": "torchvision.models.alexnet.AlexNet"}},
    )
    atlas.save(root / "atlas")
    classes = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    labels = torch.randint(0, 1000, (n,), generator=g)
    t0 = time.perf_counter()
    report = Atlas.load(root / "atlas").export_site(root / "site", classes=classes, labels=labels)
    return {
        "seconds": time.perf_counter() - t0,
        "hits": sum(layers.values()) * k,
        "report": report,
    }


def bundled(root: Path) -> dict:
    from zfwidgets.data import load_default, load_default_atlas

    d = load_default()
    atlas = load_default_atlas(d)
    atlas.save(root / "default")
    t0 = time.perf_counter()
    atlas.render(progress=False, mean=d.mean, std=d.std)
    render = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = atlas.export_site(root / "default-site", classes=d.classes)
    return {
        "seconds": time.perf_counter() - t0,
        "render": render,
        "hits": sum(int(atlas.values[n].numel()) for n in atlas.layers),
        "report": report,
    }


def main() -> None:
    from zfwidgets.atlas.site import BUNDLES
    from zfwidgets.base.static import bundle_path

    bundles = sum(bundle_path(f"site/{b}").stat().st_size for b in BUNDLES)
    with tempfile.TemporaryDirectory() as tmp:
        a = alexnet_sized(Path(tmp))
        b = bundled(Path(tmp))
    print("# Static atlas site (atlas.export_site): bytes beyond the atlas's own tiles")
    print(f"  zfsite.js + zfsite.css                                  {bundles / 1e3:8.1f} kB")
    r = a["report"]
    print(
        f"  AlexNet-sized, k=9, ImageNet-train indices + 1,000 class names: {a['hits']:,} hits, "
        f"{r.other_bytes / 1e3:.1f} kB beyond the tiles ({(r.other_bytes - bundles) / a['hits']:.1f} "
        f"bytes per hit), written in {a['seconds']:.2f} s"
    )
    r = b["report"]
    print(
        f"  bundled model, 5 layers, 208 units, k=9 (rendered in {b['render']:.1f} s): "
        f"tiles {r.tile_bytes / 1e3:.0f} kB (hard-linked), {r.other_bytes / 1e3:.1f} kB beyond "
        f"them, written in {b['seconds']:.2f} s"
    )


if __name__ == "__main__":
    main()
