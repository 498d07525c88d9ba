"""Class names and labels: find_labels, the one rule of the top-9 widget and the atlas site."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from zfwidgets.base.classes import FoundLabels, find_labels
from zfwidgets.base.source import ImageSource

X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class Items(Dataset):
    """(image, label) items; optional ``classes``, ``targets`` and ``labels`` attributes."""

    def __init__(self, labels, **attrs):
        self._labels, self.reads = labels, 0
        for k, v in attrs.items():
            setattr(self, k, v)

    def __len__(self):
        return len(X)

    def __getitem__(self, i):
        self.reads += 1
        return X[i], self._labels[i]


def test_given_names_and_labels():
    found = find_labels(X, classes=("a", "b", 2), labels=torch.tensor([0, 1, 2, 1, 0, 5]), n=6)
    assert found == FoundLabels(["a", "b", "2"], [0, 1, 2, 1, 0, 5], None)
    assert found.labels_of([2, 5]) == [2, 5]
    assert found.names_of([0, 2, 5]) == ["a", "2", "class 5"]
    assert find_labels(None, labels=np.array([3, 4])).labels == [3, 4]  # no n: any count


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"classes": "cat"}, TypeError, "classes: expected a list of class names, got str"),
        ({"classes": 3}, TypeError, "got int"),
        ({"labels": [0, 1]}, ValueError, "labels: expected 6 labels"),
        ({"labels": [0.5] * 6}, TypeError, r"labels\[0\]: expected an int"),
        ({"labels": "012345"}, TypeError, "labels: expected a sequence of ints"),
    ],
)
def test_bad_names_and_labels(kwargs, err, match):
    with pytest.raises(err, match=match):
        find_labels(X, n=6, **kwargs)


def test_from_the_data_attributes():
    ds = Items([9] * 6, classes=["x", "y"], targets=[1, 0, 1, 0, 1, 0])
    found = find_labels(ds)
    assert found.classes == ["x", "y"] and found.labels == [1, 0, 1, 0, 1, 0]
    assert found.names_of([0, 1]) == ["y", "x"] and ds.reads == 0
    # `labels` before `targets` (ImageFolder has labels); a DataLoader or an ImageSource
    # stands for its dataset
    ds.labels = [0] * 6
    for data in (ds, DataLoader(ds, batch_size=2), ImageSource(ds)):
        assert find_labels(data).labels == [0] * 6
    # classes that are not names are ignored
    assert find_labels(Items([0] * 6, classes=[0, 1])).classes is None


def test_from_the_items_when_no_attribute_fits():
    ds = Items([2, 1, 0, 2, 1, 0], targets=[1, 2])  # wrong count: read the items instead
    found = find_labels(ds)
    assert found.labels is None and found.items is ds and ds.reads == 0
    assert found.labels_of([0, 4]) == [2, 1] and ds.reads == 2
    pairs = [(x, i % 2) for i, x in enumerate(X)]
    assert find_labels(pairs).names_of([2, 3]) == ["class 0", "class 1"]
    # images with no labels
    assert find_labels(list(X)).labels_of([0, 1]) == [None, None]
    for data in (X, ImageSource(X), None):
        found = find_labels(data)
        assert found == FoundLabels() and found.names_of([0, 1]) == ["", ""]
