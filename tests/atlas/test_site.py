"""The static atlas site: ``atlas.export_site`` and ``python -m zfwidgets site``."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from models import atlas_images, saved_atlas, tiny_zf
from PIL import Image

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.site import BUNDLES, SITE_FORMAT

LAYERS = ["0", "4", "8"]
HOSTILE = '<img src=x onerror="window.__zfxss=1">'


@pytest.fixture(scope="module")
def data():
    return atlas_images()


@pytest.fixture(scope="module")
def stored(tmp_path_factory, data):
    """An atlas folder with layers "0" and "4" rendered and "8" not."""
    root = tmp_path_factory.mktemp("stored") / "atlas"
    return saved_atlas(root, data, LAYERS, 4, render=["0", "4"], format="png")


def read_script(path):
    """The JSON inside a site's one-line script (``name(...)`` or ``x = ...;``)."""
    text = path.read_text(encoding="ascii").splitlines()[1]
    if text.startswith("window.zfSiteManifest = "):
        return json.loads(text[len("window.zfSiteManifest = ") : -1])
    return json.loads(text[text.index("(") + 1 : -2])


def test_site_files_manifest_and_hits(tmp_path, stored, data):
    atlas = Atlas.load(stored, data=data)  # no model: layer 8 stays unrendered
    labels = [i % 3 for i in range(23)]
    report = atlas.export_site(tmp_path / "site", classes=["cat", HOSTILE, "dog"], labels=labels)
    site = tmp_path / "site"
    assert report.path == site and report.layers == LAYERS and report.rendered == ["0", "4"]
    assert {p.name for p in site.iterdir()} == {
        "index.html",
        "manifest.js",
        "layers",
        "tiles",
        *BUNDLES,
    }
    m = read_script(site / "manifest.js")
    assert m["format"] == SITE_FORMAT and m["k"] == 4 and m["input_size"] == [32, 32]
    assert m["images"] == 23 and m["model"].endswith("Sequential")
    assert m["classes"] == ["cat", HOSTILE, "dog"]
    assert [L["name"] for L in m["layers"]] == LAYERS
    assert m["layers"][2]["tiles"] is None
    for i, n in enumerate(LAYERS):
        L = m["layers"][i]
        assert L["channels"] == atlas.values[n].shape[0]
        hits = read_script(site / L["data"])
        assert hits[0] == i
        d = hits[1]
        v = np.asarray(d["v"]) * 10.0 ** d["e"]
        want = atlas.values[n].reshape(-1).numpy()
        np.testing.assert_allclose(v, want, rtol=0, atol=np.abs(want).max() * 5e-4 + 1e-12)
        assert np.abs(v).max() == pytest.approx(np.abs(want).max(), rel=5e-4)
        assert d["i"] == atlas.indices[n].reshape(-1).tolist()
        assert d["y"] == [labels[j] for j in d["i"]]
    # the tiles are the atlas's own files, hard-linked, one per unit
    for i, n in enumerate(["0", "4"]):
        t = m["layers"][i]["tiles"]
        assert t["missing"] == []
        for c in range(atlas.values[n].shape[0]):
            src = atlas.image_file(n, c)
            dst = site / f"{t['dir']}/{c:0{t['digits']}d}{t['ext']}"
            assert dst.read_bytes() == src.read_bytes()
            assert os.path.samefile(src, dst)
        u = atlas.unit_images(n, 0)
        assert (t["columns"], t["rows"], t["width"], t["height"]) == (
            u.layout.columns,
            u.layout.rows,
            u.layout.width,
            u.layout.height,
        )
    assert report.linked
    # the page: no inline script, no URL outside the folder, the title escaped
    page = (site / "index.html").read_text()
    assert "<script>" not in page and "http" not in page.replace("http-equiv", "")
    for ref in ("zfsite.css", "manifest.js", "zfsite.js"):
        assert f'"{ref}"' in page
    # site overhead: everything but the tiles, far below 200 kB
    overhead = sum(
        p.stat().st_size for p in site.rglob("*") if p.is_file() and "tiles" not in p.parts
    )
    assert overhead == report.other_bytes < 200_000


def test_labels_and_classes_come_from_the_data(tmp_path, stored, data):
    class Labelled(torch.utils.data.Dataset):
        classes = ["zero", "one"]

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i], i % 2

    atlas = Atlas.load(stored, data=Labelled())
    atlas.export_site(tmp_path / "site")
    m = read_script(tmp_path / "site" / "manifest.js")
    assert m["classes"] == ["zero", "one"]
    d = read_script(tmp_path / "site" / "layers" / "1.js")[1]
    assert d["y"] == [j % 2 for j in d["i"]]
    # no data: no classes, the hits still there
    Atlas.load(stored).export_site(tmp_path / "bare", title=HOSTILE)
    m = read_script(tmp_path / "bare" / "manifest.js")
    assert m["classes"] is None and m["title"] == HOSTILE
    assert "y" not in read_script(tmp_path / "bare" / "layers" / "0.js")[1]
    page = (tmp_path / "bare" / "index.html").read_text()
    assert HOSTILE not in page and "&lt;img src=x onerror=&quot;" in page


def test_rewrites_its_own_site_and_refuses_other_folders(tmp_path, stored):
    atlas = Atlas.load(stored)
    site = tmp_path / "site"
    atlas.export_site(site)
    (site / "stale.txt").write_text("old")
    atlas.export_site(site)  # a site written before is replaced whole
    assert not (site / "stale.txt").exists() and (site / "index.html").is_file()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an atlas site"):
        atlas.export_site(other)
    assert (other / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="inside the atlas"):
        atlas.export_site(stored / "site")
    with pytest.raises(ValueError, match="not a folder"):
        atlas.export_site(other / "mine.txt")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def tiles_of(site):
    """``{(layer, channel): path}`` of every tile a site's manifest names."""
    m = read_script(site / "manifest.js")
    out = {}
    for L in m["layers"]:
        t = L["tiles"]
        if t is not None:
            for c in range(L["channels"]):
                out[L["name"], c] = site / f"{t['dir']}/{c:0{t['digits']}d}{t['ext']}"
    return out


def test_one_call_from_a_mined_atlas(tmp_path, data):
    """Mine, then export: the site stores the atlas in site/atlas/ and renders it there, the
    same tiles as save + render; a rerun renders nothing again."""
    atlas = zf.mine(tiny_zf(), data, layers=LAYERS, k=3, progress=False)
    calls = []
    report = atlas.export_site(tmp_path / "site", progress=lambda d, t: calls.append((d, t)))
    site = tmp_path / "site"
    units = sum(atlas.values[n].shape[0] for n in LAYERS)
    assert calls[-1] == (units, units) and report.rendered == LAYERS and not report.missing
    assert report.atlas == site / "atlas" and atlas.path is None  # the caller's atlas as it was
    assert {p.name for p in site.iterdir()} == {"index.html", "manifest.js", "layers", "atlas"} | {
        *BUNDLES
    }
    assert "site's atlas" in report.summary() and "site/atlas" in report.summary()
    tiles = tiles_of(site)
    assert len(tiles) == units and report.tile_bytes == sum(
        p.stat().st_size for p in tiles.values()
    )
    stored = Atlas.load(site / "atlas")  # a complete atlas folder
    assert stored.layers == LAYERS and all(stored.has_images(n) for n in LAYERS)
    assert torch.equal(stored.indices["4"], atlas.indices["4"])
    # a rerun over the same hits takes the tiles over (the same files) and renders nothing
    inodes = {key: p.stat().st_ino for key, p in tiles.items()}
    calls.clear()
    atlas.export_site(site, progress=lambda d, t: calls.append((d, t)))
    assert calls == [] and {key: p.stat().st_ino for key, p in tiles_of(site).items()} == inodes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # the same tiles as the three calls it replaces
    other = atlas.attached(atlas.model)
    other.save(tmp_path / "atlas")
    other.render(progress=False)
    for (n, c), path in tiles.items():
        assert path.is_relative_to(site / "atlas" / "tiles")
        assert path.read_bytes() == other.image_file(n, c).read_bytes()
    assert not (site / ".atlas.partial").exists()


def test_single_file_atlas_needs_the_model(tmp_path, data):
    atlas = zf.mine(tiny_zf(), data, layers=["4"], k=2, progress=False)
    atlas.save(tmp_path / "single.safetensors")
    bare = Atlas.load(tmp_path / "single.safetensors")
    with pytest.raises(ValueError, match=r"model and data .*model=model, data=data"):
        bare.export_site(tmp_path / "site")
    with pytest.raises(ValueError, match=r"needs the data .*render=False"):
        Atlas.load(tmp_path / "single.safetensors", model=tiny_zf()).export_site(tmp_path / "site")
    assert not (tmp_path / "site").exists()
    # values only, when asked for
    report = bare.export_site(tmp_path / "site", render=False)
    assert report.rendered == [] and report.atlas is None
    m = read_script(tmp_path / "site" / "manifest.js")
    assert m["layers"][0]["tiles"] is None and m["title"] == "Sequential atlas (single)"
    # attached: rendered into the site
    full = Atlas.load(tmp_path / "single.safetensors", model=tiny_zf(), data=data)
    report = full.export_site(tmp_path / "site", progress=False)
    assert report.rendered == ["4"] and len(tiles_of(tmp_path / "site")) == 12
    with pytest.raises(ValueError, match="mean and std"):
        full.export_site(tmp_path / "other", mean=[0.5])
    with pytest.raises(TypeError, match="progress"):
        full.export_site(tmp_path / "other", progress="yes")
    assert not (tmp_path / "other").exists()
    from zfwidgets.atlas.site import export_site

    with pytest.raises(TypeError, match="zfwidgets.Atlas"):
        export_site(object(), tmp_path / "site")


def test_partly_rendered_folder_is_completed_in_the_site(tmp_path, stored, data):
    """Layers "0" and "4" are rendered in the atlas folder, "8" is not: the site links the
    two and renders the third in its own atlas/; the atlas folder is left as it was."""
    before = {p: p.stat().st_mtime_ns for p in stored.rglob("*")}
    atlas = Atlas.load(stored, model=tiny_zf(), data=data)
    calls = []
    report = atlas.export_site(tmp_path / "site", progress=lambda d, t: calls.append((d, t)))
    assert report.rendered == LAYERS and report.atlas == tmp_path / "site" / "atlas"
    assert calls[-1] == (16, 16)  # only layer 8's units
    tiles = tiles_of(tmp_path / "site")
    for c in range(12):
        assert os.path.samefile(tiles["4", c], atlas.image_file("4", c))
    assert report.linked
    assert Atlas.load(tmp_path / "site" / "atlas").has_images("8")
    assert {p: p.stat().st_mtime_ns for p in stored.rglob("*")} == before
    assert not atlas.has_images("8")
    # link=False copies the folder's tiles
    report = atlas.export_site(tmp_path / "copied", progress=False, link=False)
    assert not report.linked
    src, dst = atlas.image_file("0", 1), tiles_of(tmp_path / "copied")["0", 1]
    assert dst.read_bytes() == src.read_bytes() and not os.path.samefile(src, dst)


def test_cancel_keeps_the_old_site_and_resumes(tmp_path, data):
    from zfwidgets.base.progress import Cancelled

    atlas = zf.mine(tiny_zf(), data, layers=LAYERS, k=3, progress=False)
    site = tmp_path / "site"

    def cancel_at(n):
        def progress(done, total):
            if done >= n:
                raise Cancelled

        return progress

    # a first export cancelled: the folder holds the rendering only, and counts as a site
    with pytest.raises(Cancelled):
        atlas.export_site(site, progress=cancel_at(10))
    assert [p.name for p in site.iterdir()] == [".atlas.partial"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # an older site in the folder stays as it was while another atlas is cancelled
    old = zf.mine(tiny_zf(), data[:12], layers=["4"], k=2, progress=False)
    old.export_site(site, progress=False)
    page = {p.relative_to(site): p.read_bytes() for p in site.rglob("*") if p.is_file()}
    with pytest.raises(Cancelled):
        atlas.export_site(site, progress=cancel_at(20))  # layer 0 done, 4 under way
    still = {
        p.relative_to(site): p.read_bytes()
        for p in site.rglob("*")
        if p.is_file() and ".atlas.partial" not in p.parts
    }
    assert still == page
    # the next export continues: layer 0 and the units of 4 already on disk are not redone
    calls = []
    atlas.export_site(site, progress=lambda d, t: calls.append((d, t)))
    assert calls[0][1] == 12 + 16 and calls[0][0] > 1 and calls[-1] == (28, 28)
    fresh = tmp_path / "fresh"
    atlas.export_site(fresh, progress=False)
    a, b = tiles_of(site), tiles_of(fresh)
    assert a.keys() == b.keys() and all(a[key].read_bytes() == b[key].read_bytes() for key in a)
    assert not (site / ".atlas.partial").exists()


def test_the_sites_own_atlas_can_be_exported_again(tmp_path, data, stored):
    atlas = zf.mine(tiny_zf(), data, layers=["4"], k=2, progress=False)
    site = tmp_path / "site"
    atlas.export_site(site, progress=False)
    again = Atlas.load(site / "atlas")  # no model: its tiles are all there
    report = again.export_site(site, title="again")
    assert report.rendered == ["4"] and read_script(site / "manifest.js")["title"] == "again"
    assert again.unit_images("4", 0).data == tiles_of(site)["4", 0].read_bytes()
    # an atlas folder elsewhere inside a site would be deleted with it: refused
    import shutil

    shutil.copytree(stored, site / "layers" / "mine")
    with pytest.raises(ValueError, match="inside the site folder"):
        Atlas.load(site / "layers" / "mine").export_site(site)


def test_missing_tile_files_are_reported_and_marked(tmp_path, stored):
    import shutil

    broken = tmp_path / "atlas"
    shutil.copytree(stored, broken)
    atlas = Atlas.load(broken)
    atlas.image_file("4", 3).unlink()
    report = atlas.export_site(tmp_path / "site")
    assert report.missing == {"4": [3]}
    assert "1 tile file(s) missing" in report.summary()
    m = read_script(tmp_path / "site" / "manifest.js")
    assert m["layers"][1]["tiles"]["missing"] == [3]


def test_copy_instead_of_link(tmp_path, stored):
    atlas = Atlas.load(stored)
    report = atlas.export_site(tmp_path / "site", link=False)
    assert not report.linked
    src = atlas.image_file("0", 0)
    m = read_script(tmp_path / "site" / "manifest.js")
    t = m["layers"][0]["tiles"]
    dst = tmp_path / "site" / t["dir"] / src.name
    assert dst.read_bytes() == src.read_bytes() and not os.path.samefile(src, dst)


# -- the command line ------------------------------------------------------------------------
def run_here(capsys, *args):
    from zfwidgets.cli import main

    code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)


def test_cli_site(tmp_path, stored, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("cat\n" + HOSTILE + "\ndog\n")
    r = run_here(capsys, "site", stored, tmp_path / "site", "--classes", names, "--title", "T")
    assert r.returncode == 0, r.stderr
    assert "2 with pictures" in r.stderr and "no tiles for 8" in r.stderr
    m = read_script(tmp_path / "site" / "manifest.js")
    assert m["title"] == "T" and m["classes"] is None  # names, but no labels without --data


def test_cli_site_reads_labels_from_an_image_folder(tmp_path, capsys):
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for i in range(12):
        d = root / ("cat" if i % 3 else "dog")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    from zfwidgets.atlas.folder import ImageFolder

    folder = ImageFolder(root, size=32)
    atlas = zf.mine(tiny_zf(), folder, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "atlas")
    r = run_here(capsys, "site", tmp_path / "atlas", tmp_path / "site", "--data", root)
    assert r.returncode == 0, r.stderr
    m = read_script(tmp_path / "site" / "manifest.js")
    d = read_script(tmp_path / "site" / "layers" / "0.js")[1]
    assert [m["classes"][y] for y in d["y"]] == [folder.classes[folder.labels[j]] for j in d["i"]]
    # a folder with another number of images is refused before anything is written
    (root / "dog" / "extra.png").write_bytes((root / "dog" / "0.png").read_bytes())
    r = run_here(capsys, "site", tmp_path / "atlas", tmp_path / "site2", "--data", root)
    assert r.returncode == 2 and "mined over 12 images" in r.stderr
    assert not (tmp_path / "site2").exists()


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing", "no folder at"),
        ("file", "is a file"),
        ("corrupt", "cannot be read"),
        ("partial", "cannot be read"),
        ("classes", "--classes: no file"),
        ("data", "--data: expected a folder"),
        ("out", "not an atlas site"),
    ],
)
def test_cli_site_bad_input(tmp_path, stored, capsys, case, expect):
    import shutil

    atlas, out, extra = tmp_path / "atlas", tmp_path / "site", []
    if case == "file":
        atlas.write_text("x")
    elif case == "corrupt":
        shutil.copytree(stored, atlas)
        (atlas / "manifest.json").write_text('{"format": "zfwidgets.atlas-dir/1", "k": 1e999')
    elif case == "partial":
        shutil.copytree(stored, atlas)
        for p in atlas.glob("tensors-*.safetensors"):
            p.unlink()
    elif case != "missing":
        shutil.copytree(stored, atlas)
    if case == "classes":
        extra = ["--classes", tmp_path / "nope.txt"]
    elif case == "data":
        extra = ["--data", tmp_path / "nope"]
    elif case == "out":
        out.mkdir()
        (out / "thesis.tex").write_text("keep")
    r = run_here(capsys, "site", atlas, out, *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("zfwidgets site: error: ") and expect in r.stderr
    if case == "out":
        assert (out / "thesis.tex").read_text() == "keep"
    else:
        assert not out.exists()


def test_stored_labels_and_top_classes_without_data(tmp_path, data):
    """Mined with labels, k = 6, rendered with top=2 and loaded with no data: the site still
    has every hit's class (stored with the atlas), and counting them gives class_counts."""

    class Labelled(torch.utils.data.Dataset):
        classes = ["zero", HOSTILE, "two"]
        targets = [(i * 5) % 3 for i in range(len(data))]

        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return data[i], self.targets[i]

    mined = zf.mine(tiny_zf(), Labelled(), layers=["4"], k=6, progress=False)
    mined.save(tmp_path / "atlas")
    mined.render(top=2, progress=False, format="png")
    atlas = Atlas.load(tmp_path / "atlas")  # no data, no model
    atlas.export_site(tmp_path / "site")
    m = read_script(tmp_path / "site" / "manifest.js")
    assert m["k"] == 6 and m["layers"][0]["tiles"]["k"] == 2
    d = read_script(tmp_path / "site" / "layers" / "0.js")[1]
    assert len(d["y"]) == len(d["i"]) == 6 * atlas.values["4"].shape[0]
    for c in range(atlas.values["4"].shape[0]):
        counts: dict[str, int] = {}
        for y in d["y"][c * 6 : (c + 1) * 6]:  # what js/lib/classes.js countClasses counts
            counts[m["classes"][y]] = counts.get(m["classes"][y], 0) + 1
        assert counts == dict(atlas.class_counts("4", c)) == dict(mined.class_counts("4", c))
