"""DistributedDataParallel through torchrun: PyTorch's own launcher and rendezvous, nothing home-made.

`torchrun --nproc_per_node N -m edgefashion train ...` starts N processes with RANK/WORLD_SIZE/LOCAL_RANK and a
rendezvous in their environment; `setup()` joins the process group (NCCL on CUDA, gloo on CPU). A single
process (no torchrun) gets world size 1 and every collective below is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str) -> tuple[Dist, str]:
    """Join the process group when launched by torchrun; returns the ranks and the device name this process
    uses (cuda:LOCAL_RANK on GPUs)."""
    if not launched_by_torchrun():
        return Dist(), device_name
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"  # MPS has no collective backend
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device_name


def teardown(d: Dist, *, finished: bool = True) -> None:
    """Leave the process group. After a finished run all ranks meet first: rank 0 is still writing results
    and plots when the others are done, and gloo aborted a rank that tore its group down while the peer was
    still connected ("terminate called without an active exception", seen 1 in 7 CI runs). After an error
    there is no meeting: a crashed peer would never arrive."""
    if d.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        # gloo reduces CPU tensors, NCCL CUDA ones: the tensor stays where the model is.
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's value of `obj` on every rank (run folder names, stop decisions)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(indices: torch.Tensor, d: Dist, pad: bool) -> torch.Tensor:
    """This rank's share of `indices`, every world-th item from its rank, like DistributedSampler. With `pad`
    (training), the list is first extended by wrapping around so every rank takes the same number of steps;
    without (evaluation), nothing is repeated and the per-rank sums add up to the exact totals."""
    if not d.enabled:
        return indices
    if pad:
        n = indices.numel()
        total = -(-n // d.world) * d.world
        if total > n:
            indices = torch.cat([indices, indices[: total - n]])
    return indices[d.rank::d.world]
