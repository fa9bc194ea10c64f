"""Process-group setup (torchrun's environment; gloo on CPU, nccl on CUDA; plain runs are one process) and the
persistent gradient buffers that one explicit all-reduce per optimizer step synchronises.

Why not DDP: a one-shot step accumulates M sub-models' gradients before one update, so DDP's overlap of
communication with backward could only ever apply to the last backward; and a supernet's sliced parameters get
their gradients added in place into ``.grad`` (`layers.sliced`), past the autograd hooks DDP's reducer listens to.
One bucketed all-reduce of the flat gradient buffers after the last backward is all the synchronisation a step
needs, for a supernet and a fixed model alike, and no `find_unused_parameters` graph traversal per backward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..runtime import resolve_device


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False  # False when a caller (the pipeline) set the group up and will tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (RANK / WORLD_SIZE / LOCAL_RANK), or run as a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = world_size > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, owns_group=owns)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Every process takes rank `src`'s parameters and buffers (once, before training; what DDP did when built).

    Every rank builds the same weights from the same seeds and files; this makes that a guarantee."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src)


BUCKET_BYTES = 25 * 2**20  # DDP's default bucket size
_ALIGN = 16  # elements: every parameter's view starts 64-byte aligned (fp32)


class GradientBuffers:
    """Every trainable parameter's ``.grad`` as a view into a few flat buckets, allocated once (zero) and kept.

    Backward passes accumulate into the views (`AccumulateGrad` adds in place into an existing gradient; sliced
    parameters add their slices in place); after the last one, `all_reduce` sums each bucket over the processes;
    after the update, `zero` clears the buckets. A parameter no backward touched keeps a zero gradient, so AdamW
    updates it (moments, weight decay) on every process alike, as the previous DDP path did.

        buffers = GradientBuffers(module.parameters())
        buffers.attach()             # before the first backward of a step
        ... backward passes ...
        buffers.all_reduce()         # more than one process
        optimizer.step(); buffers.zero()
    """

    def __init__(self, params: Iterable[nn.Parameter], bucket_bytes: int = BUCKET_BYTES):
        self.params = [p for p in params if p.requires_grad]
        self.buckets: list[Tensor] = []
        self.views: list[Tensor] = []  # self.views[i] is self.params[i]'s gradient
        by_kind: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(self.params):
            by_kind.setdefault((p.device, p.dtype), []).append(i)
        views: dict[int, Tensor] = {}
        for (device, dtype), indices in by_kind.items():
            cap = max(1, bucket_bytes // torch.empty((), dtype=dtype).element_size())
            groups: list[list[int]] = [[]]
            size = 0
            for i in indices:  # parameters in module order, a new bucket when the current one is full
                if groups[-1] and size + self.params[i].numel() > cap:
                    groups.append([])
                    size = 0
                groups[-1].append(i)
                size += -(-self.params[i].numel() // _ALIGN) * _ALIGN
            for group in groups:
                offsets = [0]
                for i in group:
                    offsets.append(offsets[-1] + -(-self.params[i].numel() // _ALIGN) * _ALIGN)
                flat = torch.zeros(offsets[-1], dtype=dtype, device=device)
                self.buckets.append(flat)
                for i, start in zip(group, offsets):
                    views[i] = flat[start:start + self.params[i].numel()].view_as(self.params[i])
        self.views = [views[i] for i in range(len(self.params))]
        self.attach()

    def attach(self) -> None:
        """Make each parameter's ``.grad`` its view again (after anyone set it to None or replaced it)."""
        for p, view in zip(self.params, self.views):
            if p.grad is not view:
                p.grad = view

    def all_reduce(self) -> None:
        """Sum every bucket over the processes of the default group (one all-reduce per bucket, all in flight)."""
        works = [dist.all_reduce(flat, async_op=True) for flat in self.buckets]
        for work in works:
            work.wait()

    def zero(self) -> None:
        for flat in self.buckets:
            flat.zero_()
