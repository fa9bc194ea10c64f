"""One optimizer step of Algorithm 1 (batch-wise one-shot training), and the global batch it trains on.

The global batch of `batch_size` sequences is split into N sub-batches, one per Algorithm-1 worker (a process
plays `workers / world_size` of them in turn). Worker w trains each of its M archs on its sub-batch, in
`grad_accum` micro-batches; every draw (the archs, MLM masks, dropout) comes from a stream keyed by
(seed, step, w, m, micro-batch), never by the process, so N workers give the same update on N processes or one.
The gradients accumulate in place in persistent buffers (`distributed.GradientBuffers`); with more than one process,
one bucketed all-reduce after the last backward sums them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data.masking import mask_tokens, masking_spec_for
from ..seeding import derive_seed, forked_global_rng, numpy_rng, stream_purpose, torch_generator
from .config import TrainConfig
from .distributed import DistContext, GradientBuffers, broadcast_module
from .objectives import Teacher
from .tasks import TrainingTask

if TYPE_CHECKING:
    from ..data.dataset import PreparedCorpus


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports (the same on every process)."""

    loss: float  # mean loss over every worker's M x grad_accum backward passes
    tokens: int  # non-padding tokens in the global batch
    archs: list[list[str]]  # archs[w]: the M archs worker w trained
    terms: dict[str, float] = field(default_factory=dict)  # mean of each loss term (kd: attention, hidden)


def batch_rows(step: int, batch_size: int, n_train: int, seed: int, stream: str | None = None) -> np.ndarray:
    """Rows of the global batch of `step`: consecutive slices of a per-epoch seeded permutation (of `stream`)."""
    start = step * batch_size
    rows = []
    epoch_cache: dict[int, np.ndarray] = {}
    for sample in range(start, start + batch_size):
        epoch, pos = divmod(sample, n_train)
        if epoch not in epoch_cache:
            epoch_cache[epoch] = numpy_rng(seed, epoch, purpose=stream_purpose("shuffle", stream)).permutation(n_train)
        rows.append(epoch_cache[epoch][pos])
    return np.asarray(rows)


class OneShotStep:
    """Computes the gradient of one step over this process's workers, sums it over the processes, then applies one
    clipped AdamW update."""

    def __init__(self, config: TrainConfig, ctx: DistContext, workers: int, corpus: PreparedCorpus, task: TrainingTask,
                 teacher: Teacher | None, module: nn.Module, optimizer: torch.optim.Optimizer):
        self.config, self.ctx, self.workers, self.corpus, self.task = config, ctx, workers, corpus, task
        self.teacher, self.module, self.optimizer = teacher, module, optimizer
        if ctx.distributed:
            broadcast_module(module)
        self.grads = GradientBuffers(module.parameters())
        self.masking = masking_spec_for(corpus.tokenizer)
        self.sub = config.batch_size // workers  # sequences per worker
        self.micro = self.sub // config.grad_accum  # sequences per backward pass
        per_process = workers // ctx.world_size
        self.my_workers = range(ctx.rank * per_process, (ctx.rank + 1) * per_process)
        # each backward's share of the mean over all workers' M x accum losses; the all-reduce then sums the processes
        self.scale = 1.0 / (workers * config.archs_per_step * config.grad_accum)

    def _autocast(self):
        if self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def global_batch(self, step: int) -> torch.Tensor:
        """(batch_size, T) token ids in the permutation's order (read from the memory map in row order)."""
        rows = batch_rows(step, self.config.batch_size, len(self.corpus.train), self.config.seed, self.config.stream)
        ids = torch.as_tensor(np.asarray(self.corpus.train[np.sort(rows)], dtype=np.int64))
        return ids[torch.as_tensor(np.argsort(np.argsort(rows)))]

    def __call__(self, step: int) -> StepResult:
        c, dev, pad = self.config, self.ctx.device, self.corpus.pad_token_id
        mask_purpose, dropout_purpose = stream_purpose("mask", c.stream), stream_purpose("dropout", c.stream)
        ids_all = self.global_batch(step)
        loss_sum, count = 0.0, 0
        term_sums: dict[str, float] = {}
        self.grads.attach()
        for w in self.my_workers:
            ids_w = ids_all[w * self.sub:(w + 1) * self.sub]
            teacher_out = {}  # micro-batch -> teacher outputs, computed once and shared by the M archs
            for m, arch in enumerate(self.task.archs_for(step, w)):
                for a in range(c.grad_accum):
                    ids = ids_w[a * self.micro:(a + 1) * self.micro]
                    attention_mask = (ids != pad).long().to(dev)
                    labels = None
                    if c.objective == "mlm":
                        masked = mask_tokens(ids, self.masking,
                                             torch_generator(c.seed, step, w, m, a, purpose=mask_purpose))
                        inputs, labels = masked.input_ids.to(dev), masked.labels.to(dev)
                    else:
                        inputs = ids.to(dev)
                        if a not in teacher_out:
                            with self._autocast():
                                teacher_out[a] = self.teacher(inputs, attention_mask)
                    count += 1
                    dropout_seed = derive_seed(c.seed, step, w, m, a, purpose=dropout_purpose)
                    with forked_global_rng(dropout_seed, dev):  # dropout takes no generator argument
                        with self._autocast():
                            out = self.module(inputs, attention_mask, arch=arch, labels=labels,
                                              teacher=teacher_out.get(a))
                        (out.loss * self.scale).backward()
                    loss_sum += float(out.loss.detach())
                    for name, value in out.terms.items():
                        term_sums[name] = term_sums.get(name, 0.0) + float(value.detach())
        self._update()
        loss, tokens, terms = self._reduce(loss_sum, count, int((ids_all != pad).sum()), term_sums)
        archs = [[str(a) for a in self.task.archs_for(step, w)] for w in range(self.workers)]
        return StepResult(loss=loss, tokens=tokens, archs=archs, terms=terms)

    def _update(self) -> None:
        # Every parameter has a gradient (its buffer view): an untouched one a zero gradient, on every process alike.
        if self.ctx.distributed:
            self.grads.all_reduce()
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.grads.zero()  # in place: the buffers persist (no per-step allocation or first-use fill)

    def _reduce(self, loss_sum: float, count: int, tokens: int,
                term_sums: dict[str, float]) -> tuple[float, int, dict[str, float]]:
        """(mean loss, global-batch tokens, mean of each loss term) over all processes."""
        names = sorted(term_sums)  # the same terms on every process (one objective)
        totals = torch.tensor([loss_sum, float(count), float(tokens)] + [term_sums[n] for n in names])
        if self.ctx.distributed:
            totals = totals.to(self.ctx.device)
            torch.distributed.all_reduce(totals)
            totals = totals.cpu()
            totals[2] /= self.ctx.world_size  # every process holds the whole global batch
        return (float(totals[0] / totals[1]), int(totals[2]),
                {n: float(totals[3 + i] / totals[1]) for i, n in enumerate(names)})
