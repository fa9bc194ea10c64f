"""Evaluators: an arch in, a score dict and a fitness (higher is better) out.

An evaluator is any object with ``name``, ``setup()`` (load what it needs; called once in every process that
evaluates, after it was sent there) and ``evaluate(arch) -> Evaluation``; an optional ``check()`` runs in the
main process before the search starts, for cheap input checks. Evaluators that run in worker processes
are pickled before `setup`, so they hold only paths and settings until then.

* `FinetuneEvaluator`: the downstream issue's budgeted fine-tune of the extracted sub-model on a list of tasks;
  fitness = mean score (scores are fractions in [0, 1]).
* `LossEvaluator`: held-out MLM loss of the supernet sub-model on the training run's validation split (HAT's cheap
  proxy); fitness = -loss.
* `CallableEvaluator`: any Python callable ``fn(arch)`` returning a number, a dict of scores or an `Evaluation`.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from ..arch import Arch
from ..errors import UserError


class EvaluatorError(UserError):
    """An evaluator that cannot be built or returned something unusable."""


@dataclass(frozen=True)
class Evaluation:
    """Per-task (or per-metric) scores and the fitness the search maximises."""

    scores: dict[str, float]
    fitness: float


@runtime_checkable
class Evaluator(Protocol):
    name: str

    def setup(self) -> None: ...

    def evaluate(self, arch: Arch) -> Evaluation: ...


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise EvaluatorError(f"{what} must be a number, got {value!r} ({type(value).__name__})")
    return float(value)


def to_evaluation(result: Any, where: str = "evaluator") -> Evaluation:
    """Normalise what an evaluator returned: a number, a dict of numbers (fitness = mean) or an `Evaluation`."""
    if isinstance(result, Evaluation):
        return Evaluation({k: float(v) for k, v in result.scores.items()}, float(result.fitness))
    if isinstance(result, dict):
        if not result:
            raise EvaluatorError(f"{where} returned an empty score dict")
        scores = {str(k): _number(v, f"{where} score {k!r}") for k, v in result.items()}
        return Evaluation(scores, sum(scores.values()) / len(scores))
    value = _number(result, f"{where} result")
    return Evaluation({"score": value}, value)


@dataclass
class CallableEvaluator:
    """Wraps ``fn(arch)`` (number, score dict or `Evaluation`). For worker processes `fn` must be importable."""

    fn: Callable[[Arch], Any]
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise EvaluatorError(f"evaluator must be callable, got {type(self.fn).__name__}")
        if not self.name:
            self.name = getattr(self.fn, "__qualname__", type(self.fn).__name__)

    def setup(self) -> None:
        setup = getattr(self.fn, "setup", None)
        if callable(setup):
            setup()

    def evaluate(self, arch: Arch) -> Evaluation:
        return to_evaluation(self.fn(arch), f"evaluator {self.name}")


@dataclass
class LossEvaluator:
    """Held-out MLM loss of the sub-model (issue 3's `LossProxy`); fitness = -loss."""

    supernet_dir: str
    max_sequences: int | None = None
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    name: str = "loss"
    _proxy: Any = field(default=None, repr=False, compare=False)

    def setup(self) -> None:
        if self._proxy is None:
            try:
                from ..train.validation import LossProxy
            except ImportError as err:
                raise EvaluatorError(f"the loss evaluator needs autotinybert.train.validation.LossProxy "
                                     f"(one-shot training): {err}") from None
            self._proxy = LossProxy(self.supernet_dir, max_sequences=self.max_sequences, batch_size=self.batch_size,
                                    seed=self.seed, device=self.device)

    def check(self) -> None:
        """Cheap checks before the search starts: the supernet folder has its config."""
        if not (Path(self.supernet_dir) / "config.json").is_file():
            raise EvaluatorError(f"supernet folder {self.supernet_dir} has no config.json")

    def evaluate(self, arch: Arch) -> Evaluation:
        self.setup()
        loss = float(self._proxy(arch))
        return Evaluation({"loss": loss}, -loss)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_proxy": None}  # workers load their own copy in setup()


@dataclass
class FinetuneEvaluator:
    """Budgeted fine-tune of the extracted sub-model on `tasks` (issue 5's `score_supernet_arch`); fitness = mean."""

    supernet_dir: str
    tasks: tuple[str, ...]
    data_dir: str
    budget: dict[str, Any] = field(default_factory=dict)  # fields of downstream.Budget
    seed: int = 0
    tokenizer_dir: str | None = None  # default: the supernet folder
    name: str = "finetune"
    _loaded: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        if not self.tasks:
            raise EvaluatorError("the finetune evaluator needs at least one task (tasks=[SST-2,MRPC])")

    @staticmethod
    def _downstream():
        try:
            from .. import downstream
        except ImportError as err:
            raise EvaluatorError(f"the finetune evaluator needs autotinybert.downstream (downstream evaluation): "
                                 f"{err}") from None
        return downstream

    def check(self) -> None:
        """Cheap checks in the main process before the search starts: tasks known, budget valid, data present."""
        downstream = self._downstream()
        budget = downstream.Budget.from_dict(self.budget)
        for spec in downstream.parse_tasks(list(self.tasks)):
            budget.finetune_config(spec, self.data_dir, self.seed)
            if not str(self.data_dir).startswith("hf"):
                downstream.data.task_folder(spec, self.data_dir)

    def setup(self) -> None:
        if self._loaded is not None:
            return
        from ..supernet import SuperBertForMaskedLM

        downstream = self._downstream()
        budget = downstream.Budget.from_dict(self.budget)
        supernet = SuperBertForMaskedLM.from_pretrained(self.supernet_dir)
        # a folder path: the downstream code loads (and caches) the tokenizer itself
        self._loaded = (supernet, str(self.tokenizer_dir or self.supernet_dir), budget, downstream.score_supernet_arch)

    def evaluate(self, arch: Arch) -> Evaluation:
        self.setup()
        supernet, tokenizer, budget, score = self._loaded
        scores = score(supernet, arch, list(self.tasks), self.data_dir, tokenizer, budget=budget, seed=self.seed)
        return to_evaluation(dict(scores), "finetune evaluator")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loaded": None}


def import_callable(spec: str) -> Callable:
    """``package.module:function`` -> the function (imported, never evaluated as code)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise EvaluatorError(f"a Python evaluator is given as module:function, e.g. mypkg.scoring:score; got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise EvaluatorError(f"cannot import {module_name!r} for {spec!r}: {err}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvaluatorError(f"{module_name!r} has no attribute {attr!r} (from {spec!r})")
        obj = getattr(obj, part)
    return obj


def as_evaluator(obj: Any) -> Evaluator:
    """An `Evaluator` as is; any other callable wrapped in `CallableEvaluator`."""
    if isinstance(obj, Evaluator):
        return obj
    if callable(obj):
        return CallableEvaluator(obj)
    raise EvaluatorError(f"an evaluator must have setup()/evaluate(arch) or be callable; got {type(obj).__name__}")


def check_picklable(evaluator: Evaluator) -> None:
    """Worker processes receive the evaluator by pickling; say so clearly when that is impossible."""
    try:
        pickle.dumps(evaluator)
    except Exception as err:  # lambdas, closures, open handles: pickle raises several types
        raise EvaluatorError(f"evaluator {getattr(evaluator, 'name', evaluator)!r} cannot be sent to worker processes "
                             f"({err}); define it at module level in an importable module, or use workers=1") from None
