"""CorrespondenceTable without a kernel: scores against zf.correspondence, escaping, marks."""

from __future__ import annotations

import pytest

import zfwidgets as zf
from zfwidgets.widgets.correspondence_table import CorrespondenceTable


def _corr_result(default, batch, parts):
    x, _ = batch
    return zf.correspondence(default.model, x, parts, n_random=3)


def test_correspondence_table_escapes_and_marks(default, batch):
    evil = '<img src=x onerror="alert(1)">&top'
    res = _corr_result(default, batch, {evil: (0, 0, 14, 28), "bottom": (14, 0, 28, 28)})
    w = CorrespondenceTable(res)
    html_ = w.value
    assert "<img" not in html_ and 'onerror="' not in html_
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;top" in html_
    for layer in res.layers:
        assert f">{layer}<" in html_
    # every score, baseline and std is in the table; ✓ exactly where score < random
    n_below = 0
    for part in res.score:
        for layer in res.layers:
            s, r, sd = res.score[part][layer], res.random[part][layer], res.random_std[part][layer]
            assert f"{s:.3f}" in html_ and f"{r:.3f} ± {sd:.3f}" in html_
            n_below += s < r
    assert html_.count('class="zf-consistent"') == n_below
    assert html_.count("<tr>") == 2 + len(res.score)
    with pytest.raises(TypeError):
        CorrespondenceTable({"not": "a result"})


def test_correspondence_table_marker_logic():
    res = zf.Correspondence(
        layers=["L<1>"],
        score={"a": {"L<1>": 1.0}, "b": {"L<1>": 5.0}},
        random={"a": {"L<1>": 2.0}, "b": {"L<1>": 3.0}},
        random_std={"a": {"L<1>": 0.5}, "b": {"L<1>": 0.1}},
        boxes={},
        random_boxes={},
    )
    v = CorrespondenceTable(res).value
    assert v.count("zf-consistent") == 1 and "L&lt;1&gt;" in v
    row_a, row_b = v.split("<tr>")[3:5]
    assert "✓" in row_a and "✓" not in row_b
