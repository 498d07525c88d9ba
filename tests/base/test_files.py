"""base/files.py: the one atomic writer."""

from __future__ import annotations

import pytest

from zfwidgets.base.files import replace_dir, temporary_name, write_atomic, write_atomic_with


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    write_atomic(path, b"newer", sync=False)
    assert path.read_bytes() == b"newer"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def half(tmp):
        tmp.write_bytes(b"ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic_with(path, half)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_temporary_names_sit_beside_the_target_and_differ(tmp_path):
    a, b = temporary_name(tmp_path / "x"), temporary_name(tmp_path / "x")
    assert a.parent == tmp_path and a != b
    assert a.name.startswith("x.") and a.name.endswith(".tmp")


def test_replace_dir_swaps_a_finished_folder_in(tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "old.txt").write_text("old")
    tmp = temporary_name(out)
    tmp.mkdir()
    (tmp / "new.txt").write_text("new")
    replace_dir(tmp, out)
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert not tmp.exists()
