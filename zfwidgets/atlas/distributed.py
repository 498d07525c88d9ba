"""torch.distributed for the batch jobs: who am I, and an exact merge of fixed-shape tensors.

Nothing here starts processes: ``torchrun --nproc-per-node=N`` does. :func:`context` reads the
default process group when one is initialised (or initialises it when torchrun's environment
says so), and :func:`all_gather_cat` gathers same-shaped tensors from every rank, on the device
the backend needs (CUDA for NCCL, CPU for gloo).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "all_gather_cat", "context", "local_device"]


@dataclass(frozen=True)
class Context:
    """``rank`` of ``world`` processes; ``world == 1`` means a plain single-process run."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def context(device: torch.device | None = None, *, init: bool = True) -> Context:
    """The distributed context of this process.

    An initialised default process group is used as it is. Otherwise, when torchrun's
    environment (``WORLD_SIZE`` > 1, ``RANK``, ``MASTER_ADDR``) is present and ``init`` is true,
    the default group is initialised here: NCCL when ``device`` is a CUDA device, gloo otherwise.
    It is left initialised for the rest of the program and destroyed at its exit (a gloo group
    left alive at exit aborts the process: "terminate called without an active exception");
    ``dist.destroy_process_group()`` ends it sooner.
    """
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1 and init and dist.is_available() and "MASTER_ADDR" in os.environ:
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(device if device.index is not None else local_device())
        dist.init_process_group(backend)
        atexit.register(_destroy)
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def local_device() -> torch.device:
    """This process's GPU under torchrun: ``cuda:LOCAL_RANK`` (``cuda:0`` without torchrun)."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def all_gather_cat(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's ``t`` (same shape on every rank) concatenated along ``dim`` in rank order,
    returned on ``t``'s device. gloo gathers on the CPU, NCCL on the current CUDA device."""
    world = dist.get_world_size()
    comm_device = torch.device("cuda", torch.cuda.current_device()) if _nccl() else "cpu"
    local = t.to(comm_device).contiguous()
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local)
    return torch.cat(parts, dim).to(t.device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _nccl() -> bool:
    return dist.get_backend() == "nccl"
