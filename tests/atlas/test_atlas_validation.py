"""Hostile and damaged atlas files: every one is a clear ValueError, none allocates much."""

import json
import shutil
import tracemalloc

import pytest
import torch
from models import tiny_zf
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.store import MANIFEST


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return torch.rand(11, 3, 32, 32)


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("good") / "atlas"
    atlas = zf.mine(tiny_zf(), data, layers=["4", "8"], k=3, progress=False)
    atlas.provenance = {"data": {"n": 11, "fingerprint": "f"}}
    atlas.save(path)
    atlas.render(["4"], format="png", progress=False)
    return path


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("goodfile") / "atlas.safetensors"
    atlas = zf.mine(tiny_zf(), data, layers=["4", "8"], k=3, progress=False)
    atlas.save(path, images=True)
    return path


def copy(src, tmp_path):
    dst = tmp_path / "atlas"
    shutil.copytree(src, dst)
    return dst


def edit_manifest(path, fn):
    m = json.loads((path / MANIFEST).read_text())
    fn(m)
    (path / MANIFEST).write_text(json.dumps(m))


def tensors_file(path):
    return path / json.loads((path / MANIFEST).read_text())["tensors"]


def edit_tensors(path, fn):
    f = tensors_file(path)
    t = load_file(f)
    fn(t)
    save_file(t, f)


def L(i):
    return lambda m: m["layers"][i]


def setter(get, key, value):
    def fn(m):
        get(m)[key] = value

    return fn


MANIFEST_CASES = [
    ("format", lambda m: m.update(format="zfwidgets.atlas.core-dir/99"), "manifest.format"),
    ("k string", lambda m: m.update(k="3"), r"manifest\.k: expected an int"),
    ("k zero", lambda m: m.update(k=0), r"manifest\.k: expected an int in \[1"),
    ("k huge", lambda m: m.update(k=10**12), r"manifest\.k"),
    ("k bool", lambda m: m.update(k=True), r"manifest\.k: expected an int, got bool"),
    ("input size NaN", lambda m: m.update(input_size=[float("nan"), 32]), "input_size"),
    ("input size len", lambda m: m.update(input_size=[32]), "input_size: expected 2 to 2"),
    ("no layers", lambda m: m.update(layers=[]), "manifest.layers: expected 1"),
    ("layers dict", lambda m: m.update(layers={}), "manifest.layers: expected a list"),
    ("missing key", lambda m: m.pop("tensors"), "missing key 'tensors'"),
    ("dup layer", lambda m: m["layers"].append(m["layers"][0]), "listed twice"),
    ("name type", setter(L(0), "name", 4), r"layers\[0\]\.name"),
    ("channels", setter(L(0), "channels", -1), r"layers\[0\]\.channels"),
    ("channels mismatch", setter(L(0), "channels", 5), r"expected shape \(5, 3\)"),
    ("spatial", setter(L(0), "spatial", "yes"), r"layers\[0\]\.spatial"),
    ("hits", setter(L(0), "hits", "../../x"), r"layers\[0\]\.hits"),
    (
        "hits mismatch",
        lambda m: m["layers"][1].update(hits="0" * 32),
        "do not hold the hits",
    ),
    (
        "huge output size",
        lambda m: m["layers"][0]["field"].update(output_size=[10**8, 10**8]),
        r"field\.output_size\[0\]: expected an int in \[1, 65536\]",
    ),
    (
        "output size without rows",
        lambda m: m["layers"][0]["field"].update(output_size=[60000, 60000]),
        r"field\.rows: expected 60000 to 60000 entries",
    ),
    (
        "rows out of the image",
        lambda m: m["layers"][0]["field"]["rows"].__setitem__(0, [0, 10**6]),
        r"field\.rows\[0\]\[1\]",
    ),
    (
        "field of another layer",
        lambda m: m["layers"][0]["field"].update(layer="8"),
        r"field\.layer: expected '4'",
    ),
    ("field input size", lambda m: m["layers"][0]["field"].update(input_size=[64, 64]), "field"),
    (
        "tensors traversal",
        lambda m: m.update(tensors="../tensors-" + "0" * 32 + ".safetensors"),
        "manifest.tensors",
    ),
    (
        "tensors missing",
        lambda m: m.update(tensors="tensors-" + "0" * 32 + ".safetensors"),
        "no file",
    ),
    ("tiles traversal", lambda m: m["layers"][0]["images"].update(dir="../../etc"), r"images\.dir"),
    ("tiles absolute", lambda m: m["layers"][0]["images"].update(dir="/etc"), r"images\.dir"),
    ("tiles format", lambda m: m["layers"][0]["images"].update(format="svg"), r"images\.format"),
    ("tiles rule", lambda m: m["layers"][0]["images"].update(rule="magic"), r"images\.rule"),
    (
        "tiles width",
        lambda m: m["layers"][0]["images"]["layout"].update(width=10**9),
        r"layout\.width",
    ),
    (
        "tiles larger than the crop",
        lambda m: m["layers"][0]["images"]["layout"].update(tile=[4000, 4000]),
        r"layout",
    ),
    (
        "display kind",
        lambda m: m["layers"][0]["images"]["display"]["patches"].update(kind="eval"),
        r"display\.patches\.kind",
    ),
    (
        "display std zero",
        lambda m: m["layers"][0]["images"]["display"].update(
            patches={"kind": "unnormalize", "mean": [0], "std": [0]}
        ),
        r"display\.patches\.std",
    ),
    (
        "provenance NaN",
        lambda m: m.update(provenance={"data": {"n": 11}, "x": float("nan")}),
        r"provenance\.x: expected a finite number",
    ),
    (
        "provenance huge",
        lambda m: m.update(provenance={"notes": "x" * (17 << 20)}),
        "provenance: .* bytes once written",
    ),
    (
        "provenance deep",
        lambda m: m.update(provenance={"a": json.loads("[" * 40 + "]" * 40)}),
        "nested deeper",
    ),
    ("provenance n", lambda m: m.update(provenance={"data": {"n": -3}}), r"provenance\.data\.n"),
    (
        "provenance n small",
        lambda m: m.update(provenance={"data": {"n": 2}}),
        "not below the data size 2",
    ),
]


@pytest.mark.parametrize(
    ("name", "mutate", "match"), MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES]
)
def test_bad_manifest(good_dir, tmp_path, name, mutate, match):
    path = copy(good_dir, tmp_path)
    edit_manifest(path, mutate)
    with pytest.raises(ValueError, match=match):
        Atlas.load(path)


def test_manifest_not_json_or_too_big(good_dir, tmp_path):
    path = copy(good_dir, tmp_path)
    text = (path / MANIFEST).read_text()
    (path / MANIFEST).write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        Atlas.load(path)
    (path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ValueError, match="manifest: expected an object"):
        Atlas.load(path)
    with open(path / MANIFEST, "wb") as f:  # sparse: costs no disk
        f.truncate(64 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="the limit is"):
            Atlas.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    (path / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        Atlas.load(path)


TENSOR_CASES = [
    ("NaN values", lambda t: t["0.values"].__setitem__((0, 0), float("nan")), "finite"),
    ("negative index", lambda t: t["0.indices"].__setitem__((1, 1), -5), "negative image index -5"),
    (
        "index beyond data",
        lambda t: t["1.indices"].__setitem__((0, 0), 11),
        "not below the data size 11",
    ),
    (
        "position outside",
        lambda t: t["0.positions"].__setitem__((0, 0, 0), 999),
        "outside the layer's output",
    ),
    (
        "wrong dtype",
        lambda t: t.update({"0.indices": t["0.indices"].float()}),
        r"tensor '0.indices': expected dtype",
    ),
    (
        "wrong shape",
        lambda t: t.update({"0.values": t["0.values"][:, :2].contiguous()}),
        r"expected shape \(12, 3\)",
    ),
    ("missing", lambda t: t.pop("1.positions"), "missing tensor '1.positions'"),
    ("extra", lambda t: t.update({"evil": torch.zeros(3)}), "unexpected tensor 'evil'"),
]


@pytest.mark.parametrize(
    ("name", "mutate", "match"), TENSOR_CASES, ids=[c[0] for c in TENSOR_CASES]
)
def test_bad_tensors(good_dir, tmp_path, name, mutate, match):
    path = copy(good_dir, tmp_path)
    edit_tensors(path, mutate)
    with pytest.raises(ValueError, match=match):
        Atlas.load(path)


def test_hostile_safetensors_headers(good_dir, tmp_path):
    path = copy(good_dir, tmp_path)
    f = tensors_file(path)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) - 10])  # truncated
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Atlas.load(path)
    # a 100-byte file whose header claims a 10^12-element tensor
    header = json.dumps(
        {"0.values": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}
    )
    f.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="not a readable safetensors"):
            Atlas.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20
    f.write_bytes(b"\xff" * 8 + b"{}")  # a header length of 2^64 - 1
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Atlas.load(path)


def test_tiles_that_do_not_match_or_escape(good_dir, tmp_path):
    path = copy(good_dir, tmp_path)
    atlas = Atlas.load(path)
    tile = atlas.image_file("4", 0)
    from zfwidgets.base.codec import encode_image

    tile.write_bytes(encode_image(torch.zeros(5, 5, 3, dtype=torch.uint8), "png"))
    with pytest.raises(ValueError, match="expected size"):
        atlas.unit_images("4", 0).patches  # noqa: B018
    tile.write_bytes(b"GIF89a" + b"\0" * 40)
    with pytest.raises(ValueError, match="not a readable"):
        atlas.patches("4", 0)
    # the tile folder replaced by a link to somewhere else
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    folder = tile.parent
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the atlas directory"):
        Atlas.load(path).unit_images("4", 1)


# -- the single-file format -------------------------------------------------------------------
def rewrite_file(path, fn_meta=None, fn_tensors=None):
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["zfwidgets"])
    t = load_file(path)
    if fn_meta:
        fn_meta(meta)
    if fn_tensors:
        fn_tensors(t)
    save_file(t, path, metadata={"zfwidgets": json.dumps(meta)})


FILE_CASES = [
    ("layers", lambda m: m.update(layers="4"), None, "metadata.layers: expected a list"),
    ("k", lambda m: m.update(k=-1), None, r"metadata\.k"),
    (
        "huge output size",
        lambda m: m["fields"]["4"].update(output_size=[10**8, 1]),
        None,
        r"output_size\[0\]: expected an int in \[1, 65536\]",
    ),
    (
        "rows shorter than the output",
        lambda m: m["fields"]["4"].update(rows=[[0, 3]]),
        None,
        r"fields\['4'\]\.rows: expected",
    ),
    ("no field", lambda m: m["fields"].pop("8"), None, "missing key '8'"),
    ("spatial", lambda m: m.update(spatial={"4": 3}), None, r"metadata\.spatial\['4'\]"),
    ("rule", lambda m: m.update(rule="x"), None, r"metadata\.rule"),
    ("k mismatch", lambda m: m.update(k=4), None, r"expected shape \(\*, 4\)"),
    (
        "patch size",
        None,
        lambda t: t.update({"0.patches": torch.zeros(12, 3, 3, 2, 2, dtype=torch.float16)}),
        r"tensor '0.patches': expected shape",
    ),
    (
        "channel count",
        None,
        lambda t: t.update({"0.indices": t["0.indices"][:5].contiguous()}),
        r"tensor '0.indices': expected shape \(12, 3\)",
    ),
    (
        "negative index",
        None,
        lambda t: t["1.indices"].__setitem__((0, 0), -1),
        "negative image index",
    ),
    ("NaN", None, lambda t: t["1.values"].__setitem__((0, 0), float("inf")), "finite"),
]


@pytest.mark.parametrize(
    ("name", "meta", "tensors", "match"), FILE_CASES, ids=[c[0] for c in FILE_CASES]
)
def test_bad_single_file(good_file, tmp_path, name, meta, tensors, match):
    path = tmp_path / "a.safetensors"
    shutil.copy(good_file, path)
    rewrite_file(path, meta, tensors)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            Atlas.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_single_file_index_against_the_data(good_file, data):
    with pytest.raises(ValueError, match="mined over 11 images"):
        Atlas.load(good_file, data=data[:5])
    Atlas.load(good_file, data=data)
