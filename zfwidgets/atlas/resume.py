"""Resumable mining: a job's fingerprint and the parts of its work already on disk.

A checkpoint folder holds

- ``job.json``: what the job is (model structure and a hash of its parameters, data length
  and fingerprint, layers, k, input size, chunk size). A run on a folder of another job is
  refused before any work.
- ``part-<session>-<rank>.safetensors``: the running top-k of one process of one run, over the
  fixed chunks of global image indices it has finished (listed in its metadata), rewritten
  atomically (temporary file, fsync, rename) after every chunk. Parts never share a chunk: a
  run only takes the chunks no part lists yet. No pickle anywhere.

Parts are keyed by run and rank, not by data range, but list the ranges they cover, so a run
killed at any moment and restarted with any number of processes loses at most the chunks in
flight, and the final merge (value descending, then global index ascending) gives exactly the
atlas of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.files import write_atomic

__all__ = [
    "Checkpoint",
    "Part",
    "job_description",
    "model_description",
    "parameters_match",
    "saved_chunk_size",
]

JOB_FORMAT = "zfwidgets.atlas.mining-job/1"
PART_FORMAT = "zfwidgets.atlas.mining-part/1"
_PART_NAME = re.compile(r"^part-[0-9a-f]{16}-\d{1,6}\.safetensors$")
#: A part's JSON metadata is small (chunk ids, skipped indices); refuse anything larger.
_MAX_META = 64 * 1024 * 1024


def model_description(model: nn.Module, *, parameters: bool = True) -> dict:
    """The class, a hash of the module structure (names, types, parameter and buffer shapes)
    and, with ``parameters``, a hash of the parameters and buffers (:func:`_parameter_hash`)."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__};".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    out = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "structure": h.hexdigest()[:32],
    }
    if parameters:
        out["parameters"] = _parameter_hash(model)
    return out


#: The prefix of :func:`_parameter_hash`'s values. A value without it was recorded by the
#: earlier scheme (:func:`_legacy_parameter_hash`), still recognised by
#: :func:`parameters_match`.
PARAMETER_SCHEME = "2:"


def _parameter_hash(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer: its name, shape, dtype, the sum of its bits
    (:func:`_bit_sum`) and 4,096 evenly spaced elements. Computed on the model's device (a few
    bytes per tensor reach the host), in one pass over each tensor, so hashing ResNet-50 costs
    milliseconds, not a copy of its weights; any real change of the weights changes it.

    The value is the same on every device and with any number of threads: integer sums do not
    depend on the order of the additions, where the float sums of the earlier scheme took the
    rounding of the reduction's split (a checkpoint written by ``torchrun``'s one-thread
    processes was refused by a process with two threads)."""
    return PARAMETER_SCHEME + _hash_tensors(model, _bit_sum)


def _legacy_parameter_hash(model: nn.Module) -> str:
    """The earlier scheme, for values recorded before :data:`PARAMETER_SCHEME`: the float sum
    and 2-norm of each floating tensor instead of :func:`_bit_sum` (their last bits depend on
    the device and the number of threads)."""

    def stats(flat: torch.Tensor) -> bytes:
        if not flat.is_floating_point():
            return b""
        both = torch.stack([flat.sum(), torch.linalg.vector_norm(flat)]).float().cpu()
        return both.numpy().tobytes()

    return _hash_tensors(model, stats)


def _hash_tensors(model: nn.Module, stats: Callable[[torch.Tensor], bytes]) -> str:
    """SHA-256 (32 hex digits) over the state dict in name order: each tensor's name, shape and
    dtype, then, unless empty, ``stats`` of it flattened and 4,096 evenly spaced elements."""
    p = hashlib.sha256()
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items(), key=lambda kv: kv[0]):
            if not isinstance(t, torch.Tensor):
                continue
            flat = t.detach().reshape(-1)
            p.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
            if flat.numel() == 0:
                continue
            p.update(stats(flat))
            step = max(1, flat.numel() // 4096)
            p.update(flat[::step][:4096].cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return p.hexdigest()[:32]


def _bit_sum(flat: torch.Tensor) -> bytes:
    """The sum of a contiguous 1-d tensor's bytes read as 64-bit integers (32, 16 or 8 where its
    size or offset does not divide), modulo 2 to that width: exact, so the same in any order."""
    nbytes, offset = flat.numel() * flat.element_size(), flat.storage_offset() * flat.element_size()
    widths = ((torch.int64, 8), (torch.int32, 4), (torch.int16, 2), (torch.uint8, 1))
    dtype = next(d for d, w in widths if nbytes % w == 0 and offset % w == 0)
    return flat.view(dtype).sum(dtype=dtype).cpu().numpy().tobytes()


def parameters_match(recorded: Any, model: nn.Module, current: str | None = None) -> bool:
    """Whether ``recorded``, a ``"parameters"`` value of :func:`model_description` (this scheme's
    or the earlier one's), describes ``model``'s parameters; ``current``: this scheme's value
    for ``model`` when already computed."""
    if not isinstance(recorded, str):
        return False
    if recorded.startswith(PARAMETER_SCHEME):
        return recorded == (current if current is not None else _parameter_hash(model))
    return recorded == _legacy_parameter_hash(model)


def job_description(
    *,
    model: dict,
    data: dict,
    layers: list[str],
    k: int,
    input_size: tuple[int, ...],
    chunk_size: int,
) -> dict:
    return {
        "format": JOB_FORMAT,
        "model": model,
        "data": data,
        "layers": list(layers),
        "k": int(k),
        "input_size": [int(s) for s in input_size],
        "chunk_size": int(chunk_size),
    }


def saved_chunk_size(path: str | os.PathLike) -> int | None:
    """The chunk size of the job saved in the checkpoint folder ``path``, or None (no folder, no
    readable job of this format). A job written with another default chunk size resumes with
    the chunks it was cut into; a damaged ``job.json`` is reported by :meth:`Checkpoint.prepare`."""
    job_file = Path(path) / "job.json"
    try:
        if not job_file.is_file() or job_file.stat().st_size > 1_000_000:
            return None
        saved = json.loads(job_file.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("format") != JOB_FORMAT:
        return None
    size = saved.get("chunk_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return None
    return size


@dataclass
class Part:
    """One saved part: the top-k over ``chunks`` (ids), per layer (values, indices, positions)."""

    chunks: list[int]
    skipped: list[int]
    tops: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(repr=False)


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (saved {a!r}, now {b!r})")
    return out


class Checkpoint:
    """The checkpoint folder of one mining job (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike,
        job: dict,
        *,
        n: int,
        channels: dict[str, int],
        model: nn.Module | None = None,
    ):
        self.path = Path(path)
        self.job = job
        self.model = model  # recognises a job saved with the earlier parameter hash
        self.n = n
        self.channels = channels
        self.k = job["k"]
        self.chunk_size = job["chunk_size"]
        self.num_chunks = -(-n // self.chunk_size)

    # -- the job ----------------------------------------------------------------------------
    def prepare(self, *, write: bool) -> None:
        """Create the folder and ``job.json`` (when ``write``), or check that the saved job is
        this one. Raises ``ValueError`` naming every field that differs."""
        job_file = self.path / "job.json"
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint: expected a folder, got the file {str(self.path)!r}")
        if job_file.exists():
            try:
                raw = job_file.read_bytes()
                if len(raw) > 1_000_000:
                    raise ValueError("larger than 1 MB")
                saved = json.loads(raw)
                if not isinstance(saved, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise ValueError(
                    f"checkpoint: {str(job_file)!r} is not a readable job description ({e}); "
                    "remove the folder or pass another checkpoint="
                ) from e
            if saved.get("format") != JOB_FORMAT:
                raise ValueError(
                    f"checkpoint: {str(job_file)!r} has format {saved.get('format')!r}, "
                    f"expected {JOB_FORMAT!r}"
                )
            job = json.loads(json.dumps(self.job))
            old = saved["model"].get("parameters") if isinstance(saved.get("model"), dict) else None
            now = job["model"].get("parameters")
            if self.model is not None and parameters_match(old, self.model, now):
                job["model"]["parameters"] = old  # the same weights, maybe by the earlier scheme
            diff = _diff(saved, job)
            if diff:
                hint = ""
                if any(d.startswith("chunk_size ") for d in diff):
                    hint = " Leave chunk_size unset to resume with the saved chunk size."
                raise ValueError(
                    f"checkpoint: {str(self.path)!r} holds another job; it differs in "
                    + "; ".join(diff)
                    + ". Pass another checkpoint= folder (or delete this one) to start anew."
                    + hint
                )
            return
        if write:
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomic(job_file, json.dumps(self.job, indent=1).encode())

    # -- parts --------------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if _PART_NAME.match(p.name))

    def load_parts(self, files: list[Path] | None = None) -> list[Part]:
        """Read and validate every part; chunks must not overlap between parts."""
        parts = [self._read(p) for p in (self.part_files() if files is None else files)]
        seen: dict[int, int] = {}
        for i, part in enumerate(parts):
            for c in part.chunks:
                if c in seen:
                    raise ValueError(
                        f"checkpoint: chunk {c} is listed by two parts of {str(self.path)!r}; "
                        "the folder was edited by hand or mixes two runs"
                    )
                seen[c] = i
        return parts

    def _read(self, path: Path) -> Part:
        from safetensors import SafetensorError, safe_open

        where = f"checkpoint part {str(path)!r}"
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("zfwidgets")
                if raw is None or len(raw) > _MAX_META:
                    raise ValueError(f"{where}: missing or oversized metadata")
                meta = json.loads(raw)
                if not isinstance(meta, dict) or meta.get("format") != PART_FORMAT:
                    raise ValueError(f"{where}: expected format {PART_FORMAT!r}")
                layers = meta.get("layers")
                chunks, skipped = meta.get("chunks"), meta.get("skipped", [])
                if layers != self.job["layers"]:
                    raise ValueError(f"{where}: layers {layers!r} are not the job's")
                for name, vals, hi in (
                    ("chunks", chunks, self.num_chunks),
                    ("skipped", skipped, self.n),
                ):
                    if not isinstance(vals, list) or not all(
                        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < hi for v in vals
                    ):
                        raise ValueError(f"{where}: {name} must be a list of ints in [0, {hi})")
                keys = set(f.keys())
                tops = {}
                for i, layer in enumerate(layers):
                    C, k = self.channels[layer], self.k
                    want = {
                        "values": ((C, k), torch.float32),
                        "indices": ((C, k), torch.int64),
                        "positions": ((C, k, 2), torch.int64),
                    }
                    got = []
                    for what, (shape, dtype) in want.items():
                        key = f"{i}.{what}"
                        if key not in keys:
                            raise ValueError(f"{where}: tensor {key!r} is missing")
                        sl = f.get_slice(key)
                        if tuple(sl.get_shape()) != shape:
                            raise ValueError(
                                f"{where}: tensor {key!r} has shape {tuple(sl.get_shape())}, "
                                f"expected {shape}"
                            )
                        t = f.get_tensor(key)
                        if t.dtype != dtype:
                            raise ValueError(f"{where}: tensor {key!r} has dtype {t.dtype}")
                        got.append(t)
                    v, idx, pos = got
                    if bool(torch.isnan(v).any()) or bool(((idx < -1) | (idx >= self.n)).any()):
                        raise ValueError(f"{where}: NaN values or indices out of range")
                    tops[layer] = (v, idx, pos)
        except (SafetensorError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{where}: unreadable ({e})") from e
        return Part(chunks=chunks, skipped=skipped, tops=tops)

    def write_part(
        self,
        name: str,
        tops: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        chunks: list[int],
        skipped: list[int],
    ) -> None:
        """Atomically (re)write this process's part (``tops`` moved to the CPU here)."""
        from safetensors.torch import save

        tensors = {}
        for i, layer in enumerate(self.job["layers"]):
            v, idx, pos = tops[layer]
            tensors[f"{i}.values"] = v.detach().float().cpu().contiguous()
            tensors[f"{i}.indices"] = idx.cpu().contiguous()
            tensors[f"{i}.positions"] = pos.cpu().contiguous()
        meta = {
            "format": PART_FORMAT,
            "layers": self.job["layers"],
            "chunks": sorted(chunks),
            "skipped": sorted(skipped),
        }
        data = save(tensors, metadata={"zfwidgets": json.dumps(meta)})
        write_atomic(self.path / name, data)
