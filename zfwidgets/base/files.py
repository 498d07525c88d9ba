"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every write of the package that must survive a crash (an atlas's manifest, tensors and
tiles; a mining checkpoint's parts; a static site's folder) goes through this module: the
content goes to a temporary name beside the target (same folder, so the same file system),
is flushed and ``fsync``-ed, then ``os.replace``-d over the target; on any error the
temporary is removed and the target is untouched.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["replace_dir", "temporary_name", "write_atomic", "write_atomic_with"]


def temporary_name(path: str | os.PathLike) -> Path:
    """A fresh name beside ``path``: ``<name>.<8 hex>.tmp`` in the same folder."""
    path = Path(os.fspath(path))
    return path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")


def write_atomic_with(
    path: str | os.PathLike, write: Callable[[Path], None], *, sync: bool = True
) -> None:
    """Have ``write(tmp)`` create a file at the temporary path ``tmp``, then move it over
    ``path`` (flushed to disk first when ``sync``). For writers that want a path (e.g.
    ``safetensors.torch.save_file``). The temporary is removed when anything fails."""
    path = Path(os.fspath(path))
    tmp = temporary_name(path)
    try:
        write(tmp)
        if sync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see the module docstring). ``sync=False`` skips
    the ``fsync`` (the rename stays atomic; for many small files finished by one later
    synced write, such as an atlas's tiles and then its manifest)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())

    write_atomic_with(path, write, sync=False)


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Move the finished folder ``tmp`` to ``path``, replacing a folder there (removed first;
    ``os.replace`` cannot replace a non-empty folder). ``tmp`` must be on ``path``'s file
    system (make it with :func:`temporary_name`)."""
    path = Path(os.fspath(path))
    if path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)
