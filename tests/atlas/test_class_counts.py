"""Which classes a unit serves: Atlas.class_counts over all k hits, labels stored with the atlas,
and render(top=) storing pictures of the strongest few only."""

import json

import pytest
import torch
from models import tiny_zf
from safetensors.torch import load_file, save_file

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.store import MANIFEST
from zfwidgets.base.classes import count_classes

NAMES = ["cat", "dog", "<b>car</b>"]


class Labelled(torch.utils.data.Dataset):
    """Images with ``targets`` and ``classes``, as torchvision datasets have them."""

    def __init__(self, images, targets, classes):
        self.images, self.targets, self.classes = images, targets, classes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def hand_built(labels=None, classes=None, source=None):
    """One layer 'a' of 2 units, k = 6: unit 0 hits images 0..5, unit 1 images 6..11."""
    indices = torch.arange(12).reshape(2, 6)
    return Atlas(
        layers=["a"],
        k=6,
        values={"a": torch.linspace(6, 1, 12).reshape(2, 6)},
        indices={"a": indices},
        positions={"a": torch.zeros(2, 6, 2, dtype=torch.long)},
        fields={},
        input_size=(8, 8),
        source=source,
        labels={} if labels is None else {"a": labels},
        classes=classes,
    )


def test_count_classes_orders_by_count_then_index():
    assert count_classes([2, 0, 2, None, 1, 0, 2, -1], ["cat", "dog", "car"]) == [
        ("car", 3),
        ("cat", 2),
        ("dog", 1),
    ]
    assert count_classes([1, 0], None) == [("class 0", 1), ("class 1", 1)]  # tie: index
    assert count_classes([None, -1], None) == []


def test_class_counts_from_stored_labels():
    labels = torch.tensor([[2, 1, 2, 1, 0, -1], [0, 0, 0, 0, 0, 0]])
    atlas = hand_built(labels, NAMES)
    # ties (dog 2, car 2) by class index; the hit without a label not counted
    assert atlas.class_counts("a", 0) == [("dog", 2), ("<b>car</b>", 2), ("cat", 1)]
    assert atlas.class_counts("a", 1) == [("cat", 6)]
    assert atlas.class_counts("a", 0, classes=["x", "y", "z"])[0] == ("y", 2)
    # labels= given: one per image of the data (12 here)
    given = [1] * 6 + [2] * 6
    assert atlas.class_counts("a", 1, labels=given) == [("<b>car</b>", 6)]
    with pytest.raises(ValueError, match="labels: 3 labels, but the atlas names image"):
        atlas.class_counts("a", 1, labels=[0, 1, 2])


def test_class_counts_errors():
    atlas = hand_built(torch.zeros(2, 6, dtype=torch.long), NAMES)
    with pytest.raises(ValueError, match=r"layer: 'b' is not in this atlas; it holds \['a'\]"):
        atlas.class_counts("b", 0)
    with pytest.raises(ValueError, match=r"channel: expected an int in \[0, 2\)"):
        atlas.class_counts("a", 2)
    with pytest.raises(ValueError, match="channel"):
        atlas.class_counts("a", True)
    with pytest.raises(ValueError, match="channel: expected an int, got None"):
        atlas.class_counts("a", None)
    with pytest.raises(TypeError, match="classes: expected a list of class names"):
        atlas.class_counts("a", 0, classes="cat")
    with pytest.raises(ValueError, match="no labels: none were stored with it and no data"):
        hand_built().class_counts("a", 0)
    from zfwidgets.base.source import ImageSource

    unlabelled = hand_built(source=ImageSource(torch.rand(12, 3, 8, 8)))
    with pytest.raises(ValueError, match="no labels: .* its data has none"):
        unlabelled.class_counts("a", 0)


def test_class_counts_read_from_the_data_use_all_k_hits():
    torch.manual_seed(0)
    images = torch.rand(23, 3, 32, 32)
    targets = [i % 3 for i in range(23)]
    data = torch.utils.data.TensorDataset(images, torch.tensor(targets))  # labels in the items
    atlas = zf.mine(tiny_zf(), data, layers=["4"], k=15, progress=False)
    for c in range(atlas.values["4"].shape[0]):
        want = {}
        for i in atlas.indices["4"][c].tolist():
            want[f"class {targets[i]}"] = want.get(f"class {targets[i]}", 0) + 1
        got = atlas.class_counts("4", c)
        assert dict(got) == want and sum(n for _, n in got) == 15
        assert [n for _, n in got] == sorted((n for _, n in got), reverse=True)


@pytest.fixture(scope="module")
def labelled():
    torch.manual_seed(1)
    images = torch.rand(23, 3, 32, 32)
    return Labelled(images, [(i * 7) % 3 for i in range(23)], NAMES)


def test_labels_round_trip_directory_and_file(tmp_path, labelled):
    atlas = zf.mine(tiny_zf(), labelled, layers=["0", "4"], k=10, progress=False)
    want = {(n, c): atlas.class_counts(n, c) for n in ("0", "4") for c in range(3)}
    atlas.save(tmp_path / "atlas")
    m = json.loads((tmp_path / "atlas" / MANIFEST).read_text())
    assert m["classes"] == NAMES
    atlas.save(tmp_path / "atlas.safetensors")
    for path in (tmp_path / "atlas", tmp_path / "atlas.safetensors"):
        back = Atlas.load(path)  # no data: the labels come from the files
        assert back.source is None and back.classes == NAMES
        for n in ("0", "4"):
            assert torch.equal(back.hit_labels(n), atlas.hit_labels(n))
            for c in range(3):
                assert back.class_counts(n, c) == want[(n, c)]


def test_labels_beyond_the_names_round_trip(tmp_path):
    """A label with no name (the data names 2 classes, one image says 5) is kept and named
    'class 5', and the folder it is saved to loads."""
    torch.manual_seed(0)
    targets = [5 if i == 0 else i % 2 for i in range(12)]
    data = Labelled(torch.rand(12, 3, 32, 32), targets, ["a", "b"])
    atlas = zf.mine(tiny_zf(), data, layers=["4"], k=12, progress=False)
    atlas.save(tmp_path / "a")
    back = Atlas.load(tmp_path / "a")
    assert back.class_counts("4", 0) == atlas.class_counts("4", 0)
    assert ("class 5", 1) in back.class_counts("4", 0)


def test_an_atlas_without_labels_still_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    atlas = zf.mine(tiny_zf(), torch.rand(12, 3, 32, 32), layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    m = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert "classes" not in m
    tensors = load_file(tmp_path / "a" / m["tensors"])
    assert sorted(tensors) == ["0.indices", "0.positions", "0.values"]
    back = Atlas.load(tmp_path / "a")
    assert back.labels == {} and back.hit_labels("4") is None
    with pytest.raises(ValueError, match="no labels"):
        back.class_counts("4", 0)


def test_old_format_string_still_loads(tmp_path, labelled):
    """Directories written while the format read 'zfwidgets.atlas.core-dir/1' still load."""
    atlas = zf.mine(tiny_zf(), labelled, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    m = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert m["format"] == "zfwidgets.atlas-dir/1"
    m["format"] = "zfwidgets.atlas.core-dir/1"
    (tmp_path / "a" / MANIFEST).write_text(json.dumps(m))
    assert Atlas.load(tmp_path / "a").class_counts("4", 0) == atlas.class_counts("4", 0)


def _tamper(path, *, tensors=None, manifest=None):
    m = json.loads((path / MANIFEST).read_text())
    if tensors is not None:
        t = load_file(path / m["tensors"])
        tensors(t)
        save_file(t, path / m["tensors"])
    if manifest is not None:
        manifest(m)
        (path / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize(
    "tensors, manifest, message",
    [
        (
            lambda t: t.update({"0.labels": torch.zeros(2, 3, dtype=torch.long)}),
            None,
            r"tensor '0.labels': expected shape \(\d+, 3\)",
        ),
        (
            lambda t: t.update({"0.labels": t["0.labels"].float()}),
            None,
            "tensor '0.labels': expected dtype",
        ),
        (
            lambda t: t["0.labels"].fill_(1 << 31),
            None,
            r"labels: expected -1 \(no label\) or a class index in \[0, 2147483648\), found",
        ),
        (lambda t: t["0.labels"].fill_(-2), None, "found -2"),
        (None, lambda m: m.update({"classes": "cat"}), "manifest.classes: expected a list"),
        (None, lambda m: m.update({"classes": ["cat", 7]}), r"manifest.classes\[1\]"),
        (None, lambda m: m.update({"classes": ["x" * 1001]}), r"manifest.classes\[0\]"),
        (
            lambda t: t.update({"1.labels": torch.zeros(1, 3, dtype=torch.long)}),
            None,
            "unexpected tensor '1.labels'",
        ),
    ],
)
def test_hostile_labels_are_refused(tmp_path, labelled, tensors, manifest, message):
    atlas = zf.mine(tiny_zf(), labelled, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    _tamper(tmp_path / "a", tensors=tensors, manifest=manifest)
    with pytest.raises(ValueError, match=message):
        Atlas.load(tmp_path / "a")


def test_render_top_stores_only_the_strongest_few(tmp_path, labelled):
    """Mining k = 20 then render(top=4): each sprite holds 4 hits, its size that of a k = 4
    sprite; the class counts still use all 20 hits."""
    from zfwidgets.base.codec import decode_image

    model = tiny_zf()
    big = zf.mine(model, labelled, layers=["4"], k=20, progress=False)
    small = zf.mine(model, labelled, layers=["4"], k=4, progress=False)
    for atlas, name, top in ((big, "big", 4), (small, "small", None)):
        atlas.save(tmp_path / name)
        atlas.render(top=top, progress=False, format="png")
    rb, rs = big._store.images["4"], small._store.images["4"]
    assert rb.layout.k == 4 and rb.layout == rs.layout
    m = json.loads((tmp_path / "big" / MANIFEST).read_text())
    assert m["k"] == 20 and m["layers"][0]["images"]["layout"]["k"] == 4
    for c in range(3):
        a, b = big.unit_images("4", c), small.unit_images("4", c)
        assert decode_image(a.data).shape == decode_image(b.data).shape
        assert (a.patches == b.patches).all()  # the same 4 strongest hits, the same pixels
        assert sum(n for _, n in big.class_counts("4", c)) == 20
    back = Atlas.load(tmp_path / "big")  # no data: 4 stored tiles, 20 hits, 20 labels
    assert back.patches("4", 0).shape[0] == 4 and back.indices["4"].shape[1] == 20
    assert back.class_counts("4", 1) == big.class_counts("4", 1)
    # rendering again with another top renders again; the same top is skipped
    before = rb.dir
    big.render(top=4, progress=False, format="png")
    assert big._store.images["4"].dir == before
    big.render(top=9, progress=False, format="png")
    assert big._store.images["4"].dir != before and big._store.images["4"].layout.k == 9
    with pytest.raises(ValueError, match="top: expected a positive int or None, got 0"):
        big.render(top=0)
