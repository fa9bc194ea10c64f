"""The pipeline under ``torchrun``: which rank runs what, and how the others learn the outcome.

Launched with ``torchrun``, every rank runs `run_pipeline`. Rank 0 owns the run folder: it decides whether a stage
is skipped, resumed or started, and it alone runs the single-process stages (tokenize, latency, predictor, extract,
finetune, report) while the other ranks wait. The multi-process stages (supernet and further training, data-parallel,
the searches with one candidate per rank) run on every rank. Decisions and stage outputs travel from rank 0 over
a gloo group of the pipeline's own, with a long timeout: a rank may wait hours for rank 0 to fine-tune, which the
default group's 30-minute timeout (the one collectives use, where a long wait means a hang) would cut short.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

WAIT_TIMEOUT = timedelta(hours=72)  # longest a rank waits for rank 0's single-process stage


@dataclass
class Ranks:
    """This process's place in the launch; a plain run is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    _group: Any = None
    _owns_default_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls) -> Ranks:
        """Join torchrun's launch (WORLD_SIZE / RANK) or return the single-process default."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        import torch
        import torch.distributed as dist

        owns = not dist.is_initialized()
        if owns:
            # one default group for every stage: gloo for CPU tensors and objects, nccl for the gradient all-reduce on CUDA
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        group = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), group, owns)

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (any JSON-like object); a no-op in a plain run."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        return box[0]

    def close(self) -> None:
        if self.distributed and self._owns_default_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
