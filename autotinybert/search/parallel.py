"""Evaluating a generation's candidates: in process, over worker processes, or over `torchrun` ranks.

Each backend yields ``EvalResult`` in any order; the search writes them in candidate order, so the files do not
depend on the backend or the worker count.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Iterator, Sequence

from ..arch import Arch
from .evaluators import Evaluation, Evaluator, EvaluatorError, check_picklable


@dataclass(frozen=True)
class EvalResult:
    index: int
    evaluation: Evaluation
    wall_s: float
    worker: str


def _timed(evaluator: Evaluator, index: int, arch: Arch, worker: str) -> EvalResult:
    start = time.perf_counter()
    evaluation = evaluator.evaluate(arch)
    if not isinstance(evaluation, Evaluation):
        raise EvaluatorError(f"evaluator {evaluator.name!r} returned {type(evaluation).__name__}, not an Evaluation")
    return EvalResult(index, evaluation, round(time.perf_counter() - start, 4), worker)


class SerialBackend:
    """Evaluate one by one in this process."""

    name = "serial"
    is_writer = True

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self._ready = False

    def __enter__(self) -> SerialBackend:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def evaluate(self, items: Sequence[tuple[int, Arch]]) -> Iterator[EvalResult]:
        if not self._ready:
            self.evaluator.setup()
            self._ready = True
        for index, arch in items:
            yield _timed(self.evaluator, index, arch, "main")


# ----- worker processes ------------------------------------------------------------------------------
_WORKER_EVALUATOR: Evaluator | None = None


def _init_worker(evaluator: Evaluator, threads: int) -> None:
    global _WORKER_EVALUATOR
    try:
        import torch

        torch.set_num_threads(threads)  # workers share the cores instead of each taking all of them
    except ImportError:
        pass
    evaluator.setup()
    _WORKER_EVALUATOR = evaluator


def _worker_evaluate(index: int, arch: Arch) -> EvalResult:
    assert _WORKER_EVALUATOR is not None, "worker initializer did not run"
    return _timed(_WORKER_EVALUATOR, index, arch, f"pid:{os.getpid()}")


class ProcessPoolBackend:
    """Evaluate over `workers` spawned processes (each loads the evaluator once, at `threads` torch threads)."""

    name = "processes"
    is_writer = True

    def __init__(self, evaluator: Evaluator, workers: int, threads: int | None = None):
        check_picklable(evaluator)
        self.evaluator = evaluator
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessPoolBackend:
        self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                         initargs=(self.evaluator, self.threads))
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def evaluate(self, items: Sequence[tuple[int, Arch]]) -> Iterator[EvalResult]:
        assert self._pool is not None, "use the backend as a context manager"
        pending = {self._pool.submit(_worker_evaluate, index, arch) for index, arch in items}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


# ----- torchrun ranks ----------------------------------------------------------------------------------
def distributed_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


class DistributedBackend:
    """Under ``torchrun``: in rounds of `world` candidates, rank r evaluates candidate ``round * world + r``; results
    are all-gathered, so every rank sees every result (and proposes the same next generation). Rank 0 writes."""

    name = "torchrun"

    def __init__(self, evaluator: Evaluator):
        import torch.distributed as dist

        self.dist = dist
        self._own_group = False
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            self._own_group = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.evaluator = evaluator
        self.is_writer = self.rank == 0
        self._ready = False

    def __enter__(self) -> DistributedBackend:
        return self

    def __exit__(self, *exc) -> None:
        if self._own_group and self.dist.is_initialized():
            self.dist.destroy_process_group()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        box = [value]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def evaluate(self, items: Sequence[tuple[int, Arch]]) -> Iterator[EvalResult]:
        if not self._ready:
            self._ready = True
            failure = self._guard(self.evaluator.setup)
            self._raise_if_any(self._gather(failure))
        for start in range(0, len(items), self.world):
            mine = start + self.rank
            outcome: Any = None
            if mine < len(items):
                index, arch = items[mine]
                outcome = self._guard(lambda: _timed(self.evaluator, index, arch, f"rank:{self.rank}"))
            gathered = self._gather(outcome)
            self._raise_if_any(gathered)
            yield from (r for r in gathered if r is not None)

    def _gather(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, value)
        return out

    @staticmethod
    def _guard(fn) -> Any:
        # An error on one rank must reach all ranks, or the others would wait in all_gather forever.
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - re-raised on every rank below
            return ("error", type(err).__name__, str(err), isinstance(err, EvaluatorError) or _is_user_error(err))

    @staticmethod
    def _raise_if_any(gathered: list[Any]) -> None:
        for rank, item in enumerate(gathered):
            if isinstance(item, tuple) and item and item[0] == "error":
                _, kind, message, user = item
                text = f"rank {rank}: {kind}: {message}"
                raise EvaluatorError(text) if user else RuntimeError(text)


def _is_user_error(err: Exception) -> bool:
    from ..errors import UserError

    return isinstance(err, UserError)


def make_backend(evaluator: Evaluator, workers: int, threads: int | None = None):
    """torchrun ranks when WORLD_SIZE > 1, else processes when workers > 1, else in process."""
    _, world = distributed_world()
    if world > 1:
        if workers > 1:
            raise EvaluatorError("under torchrun every rank evaluates in its own process; drop workers=N "
                                 "(use torchrun --nproc-per-node for parallelism)")
        return DistributedBackend(evaluator)
    if workers > 1:
        return ProcessPoolBackend(evaluator, workers, threads)
    return SerialBackend(evaluator)
