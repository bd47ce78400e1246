"""Data-parallel training on several processes, started by ``torchrun`` (machinery, not taught).

    torchrun --standalone --nproc_per_node=8 -m tools.pretrain --budget gpu ...

Each process holds the whole model and trains on its share of every batch; before each optimizer
step the gradients are averaged over the processes, so every process takes the same step, the
one a single process would take on the whole batch (exactly, for models without batch norm; with
batch norm each process normalises its own share, as in PyTorch's DistributedDataParallel without
SyncBatchNorm). NCCL on GPUs (one per process), gloo on CPUs. One process (no ``torchrun``) is the
default and needs none of this: :func:`setup` then returns a context that changes nothing.

Why not ``torch.nn.parallel.DistributedDataParallel`` itself: it averages gradients through hooks
that its wrapper's ``forward`` arms, and the course's steps call models through methods
(``model.loss(x)``, ``D.features(x)``, ``D.score(h, y)``, ``torch.autograd.grad`` for the gradient
penalty) that bypass a wrapper's ``forward``, so the averaging would silently not happen.
:func:`average_gradients` does what DDP's reducer does, one flat all-reduce per optimizer step (in
one bucket, not overlapped with the backward pass), under any step, without a change to the
teaching code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class Context:
    """``rank`` of ``world`` processes, and this process's device; ``main`` is the one that writes."""
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


def setup(device: torch.device) -> Context:
    """The context of this process: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is
    started (NCCL on CUDA, each process on GPU ``LOCAL_RANK``; gloo otherwise); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"process {rank} wants GPU {local} but this machine has {torch.cuda.device_count()}: "
                               "start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, device)


def broadcast_weights(ctx: Context, *modules: torch.nn.Module) -> None:
    """Every process starts from process 0's weights and buffers."""
    if ctx.parallel:
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, 0)


def average_gradients(ctx: Context, *optimizers: torch.optim.Optimizer) -> None:
    """From now on each of ``optimizers`` averages its parameters' gradients over the processes
    just before it steps (a parameter without a gradient counts as zero on that process)."""
    if not ctx.parallel:
        return
    for opt in optimizers:
        step = opt.step

        def averaged_step(*args, _opt=opt, _step=step, **kwargs):
            params = [p for group in _opt.param_groups for p in group["params"] if p.requires_grad]
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grads = [p.grad for p in params]
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat /= ctx.world
            for g, averaged in zip(grads, _unflatten_dense_tensors(flat, grads)):
                g.copy_(averaged)
            return _step(*args, **kwargs)

        opt.step = averaged_step


class Shard:
    """This process's share of every batch of ``batches`` (rows ``rank``, ``rank + world``, ...):
    every process draws the same shuffled batches from the same seed and keeps its own rows."""

    def __init__(self, batches, ctx: Context):
        self.batches, self.ctx = batches, ctx
        self.generator = getattr(batches, "generator", None)   # for the resume file's data order

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        r, w = self.ctx.rank, self.ctx.world
        for x, y in self.batches:
            yield x[r::w], y[r::w]


def shard(batches, ctx: Context):
    """``batches`` itself for one process, else a :class:`Shard` of it."""
    return Shard(batches, ctx) if ctx.parallel else batches


def noise_seed(ctx: Context, seed: int) -> None:
    """Each process draws its own noise after the shared initial weights (one process: unchanged)."""
    if ctx.parallel:
        torch.manual_seed(seed + 1_000_003 * ctx.rank)


def finish(ctx: Context) -> None:
    if ctx.parallel and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
