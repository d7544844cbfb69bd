"""Scale-out with ``torchrun --nproc_per_node=N``: process groups, data sharding, gradient averaging.

Every process draws the same global batch (the data order depends only on the seed) and keeps its
``1/N`` share (:func:`shard`). Plain methods run through
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages gradients during backward, so
with equal shards the update equals the single-process update on the global batch (up to
floating-point summation order and per-shard batch-norm statistics). Methods that compute their own
gradients (OFMU's double backward, which DDP's reducer does not see) average them explicitly with
:meth:`DistContext.all_reduce_mean`. Backend: ``gloo`` on CPU, ``nccl`` on CUDA.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands.

    Attributes:
        rank: this process's rank (0 in a single process).
        world_size: number of processes.
        backend: ``"gloo"``, ``"nccl"`` or ``"none"``.
    """

    rank: int = 0
    world_size: int = 1
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_reduce_mean(self, tensors: list[Tensor]) -> None:
        """Average ``tensors`` in place across processes (no-op in a single process)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        for tensor in tensors:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


SINGLE_PROCESS = DistContext()


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, if any.

    Returns :data:`SINGLE_PROCESS` when ``WORLD_SIZE`` is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    logger.info("process %d of %d (%s)", rank, world_size, backend)
    return DistContext(rank=rank, world_size=dist.get_world_size(), backend=backend)


def local_device(requested: str) -> torch.device:
    """The device for this process: ``cuda:LOCAL_RANK`` when CUDA is requested under torchrun."""
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def shard(indices: Tensor, ctx: DistContext) -> Tensor:
    """This process's contiguous share of a global batch of row ``indices``."""
    if not ctx.enabled:
        return indices
    return torch.tensor_split(indices, ctx.world_size)[ctx.rank]


def wrap_ddp(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed, else ``model``."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def average_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (batch-norm running statistics) so replicas stay equal."""
    if ctx.enabled:
        ctx.all_reduce_mean([b.data for b in model.buffers() if b.dtype.is_floating_point])


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
