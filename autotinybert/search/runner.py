"""`run_search`: one call that runs a whole search to the end, resumably, and writes its results.

Files in ``out``:

* ``config.json``      the resolved config, the space, the latency window (written when the search starts);
* ``candidates.jsonl`` one line per evaluated arch, in candidate order (appended, fsynced);
* ``best.json``        the top k, per-generation counts (draws, rejections, mutations) and the window;
* ``search.png``       fitness by generation, and predicted latency against fitness with the window drawn.

``resume=True`` re-derives every generation's proposals from (seed, generation) and the recorded fitness, checks
that the recorded candidates are exactly those, and evaluates only what is missing.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_write_json
from ..space import SearchSpace
from .evaluators import (CallableEvaluator, Evaluation, Evaluator, FinetuneEvaluator, LossEvaluator, as_evaluator,
                         import_callable)
from .methods import METHODS, MethodParams, propose_generation
from .parallel import EvalResult, make_backend
from .records import CANDIDATES_FILE, CandidateLog, CandidateRecord, finite_or_none, sort_key
from .sampling import DEFAULT_MAX_DRAWS, AdmissibleSampler
from .target import DEFAULT_WINDOW, LatencyModel, LatencyWindow, check_latency_model

CONFIG_FILE = "config.json"
BEST_FILE = "best.json"
PLOT_FILE = "search.png"
EVALUATORS = ("finetune", "loss")
# Keys that do not change which candidates are proposed or how they score: free to differ on --resume.
RUN_ONLY_KEYS = ("out", "resume", "overwrite", "workers", "threads", "progress", "plot")


class SearchConfigError(UserError):
    """A search config that cannot run."""


@dataclass
class SearchConfig:
    """Everything a search needs; build from a dict (YAML) with `from_dict`. See docs/search.md for each key."""

    supernet: str | None = None  # supernet folder (its space is the default search space)
    predictor: str | None = None  # latency predictor file (LatencyPredictor.load) or module:attr
    speedup: float | None = None  # target = predictor.reference_ms / speedup ...
    latency_ms: float | None = None  # ... or an absolute target
    window: tuple[float, float] = DEFAULT_WINDOW  # admissible predicted latency, as factors of the target
    method: str = "evolved"  # evolved | random | fast
    evaluator: str | None = None  # finetune | loss | module:function (None: pass one to run_search)
    tasks: list[str] = field(default_factory=list)  # finetune: GLUE/SQuAD task names
    data: str | None = None  # finetune: data folder
    budget: dict[str, Any] = field(default_factory=dict)  # finetune: downstream.Budget keyword arguments
    tokenizer: str | None = None  # finetune: tokenizer folder (default: the supernet folder)
    loss_max_sequences: int | None = None  # loss: validation sequences used (None: all)
    loss_batch_size: int = 32
    space: str | dict | None = None  # preset, YAML file or dict; default: the supernet's space
    out: str | None = None  # output folder (None: nothing written, no resume)
    generations: int = 4  # T
    population: int = 25  # S
    mutation_prob: float = 0.5  # pm, per dimension
    explore_prob: float = 0.5  # pe
    mutation_steps: int = 4  # grid steps a mutated dimension (other than layers) may move
    max_redraws: int = 100  # redraws of an inadmissible or duplicate child before a fresh sample
    max_draws: int = DEFAULT_MAX_DRAWS  # draws per fresh admissible sample before giving up
    fast_pool: int = 16  # fast: rule candidates drawn per layer count
    top_k: int = 3
    seed: int = 0
    workers: int = 1  # evaluation processes (under torchrun: one per rank instead)
    threads: int | None = None  # torch threads per worker process (default: cores / workers)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    plot: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        if not isinstance(data, dict):
            raise SearchConfigError(f"a search config must be a mapping, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SearchConfigError(f"unknown search config key(s) {unknown}; known keys are {known}")
        config = cls(**data)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = list(self.window)
        return data

    def validate(self) -> None:
        """Check every field before any work starts."""
        def positive_int(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if allow_none and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise SearchConfigError(f"{name} must be a positive integer, got {value!r}")

        for name in ("generations", "population", "mutation_steps", "max_redraws", "max_draws", "fast_pool",
                     "top_k", "workers", "loss_batch_size"):
            positive_int(name)
        positive_int("threads", allow_none=True)
        positive_int("loss_max_sequences", allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise SearchConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in ("mutation_prob", "explore_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise SearchConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if self.method not in METHODS:
            raise SearchConfigError(f"unknown method {self.method!r}; choose one of {list(METHODS)}")
        if (self.speedup is None) == (self.latency_ms is None):
            raise SearchConfigError("give exactly one latency target: speedup (--speedup X) or latency_ms "
                                    "(--latency-ms T)")
        if isinstance(self.window, (list, tuple)) and len(self.window) == 2:
            self.window = (float(self.window[0]), float(self.window[1]))
        else:
            raise SearchConfigError(f"window must be two factors [low, high], e.g. [0.85, 1.1]; got {self.window!r}")
        if self.evaluator in EVALUATORS and not self.supernet:
            raise SearchConfigError(f"the {self.evaluator} evaluator needs a supernet folder (--supernet DIR)")
        if self.evaluator == "finetune":
            if not self.tasks:
                raise SearchConfigError("the finetune evaluator needs tasks (--tasks SST-2 MRPC ...)")
            if not self.data:
                raise SearchConfigError("the finetune evaluator needs the data folder (--data DIR)")
        if self.evaluator is not None and self.evaluator not in EVALUATORS and ":" not in self.evaluator:
            raise SearchConfigError(f"evaluator must be one of {list(EVALUATORS)} or module:function; "
                                    f"got {self.evaluator!r}")
        if isinstance(self.tasks, str):  # "SST-2,MRPC" from a YAML file
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not isinstance(self.tasks, (list, tuple)) or not all(isinstance(t, str) for t in self.tasks):
            raise SearchConfigError(f"tasks must be a list of task names, got {self.tasks!r}")
        self.tasks = list(self.tasks)
        if not isinstance(self.budget, dict):
            raise SearchConfigError(f"budget must be a mapping of downstream.Budget fields, got {self.budget!r}")
        if self.resume and not self.out:
            raise SearchConfigError("resume needs the output folder of the run to continue (--out DIR)")
        if self.resume and self.overwrite:
            raise SearchConfigError("resume and overwrite contradict each other; pick one")

    def result_relevant(self) -> dict[str, Any]:
        data = self.to_dict()
        for key in RUN_ONLY_KEYS:
            data.pop(key)
        return data


@dataclass
class SearchResult:
    """What a search found and did."""

    best: list[CandidateRecord]  # top k, best first
    candidates: list[CandidateRecord]  # every evaluated candidate, in search order
    window: LatencyWindow
    space: SearchSpace
    method: str
    generations: list[dict[str, Any]]  # per generation: proposals and the counts that explain them
    resumed: int  # candidates taken from an earlier run's candidates.jsonl
    evaluated: int  # candidates evaluated by this call
    wall_s: float
    out: Path | None = None

    @property
    def best_arch(self) -> Arch:
        return Arch.parse(self.best[0].arch)


# ----- building the pieces -----------------------------------------------------------------------------
def load_predictor(spec: str) -> LatencyModel:
    """A predictor file (`autotinybert.latency.LatencyPredictor.load`) or ``module:attr`` (an object with
    ``predict``/``reference_ms``, or a no-argument factory returning one)."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        if not path.exists():
            raise SearchConfigError(f"latency predictor file {spec} does not exist (build one with the latency tools)")
        from ..latency import LatencyPredictor

        predictor = LatencyPredictor.load(path)
        # Latency measured on another machine or with other settings is not this machine's latency:
        # other settings raise, another CPU or library version warns.
        predictor.check_device()
        return check_latency_model(predictor)
    obj = import_callable(spec)
    if isinstance(obj, type) or (not callable(getattr(obj, "predict", None)) and callable(obj)):
        obj = obj()  # a class or a factory
    return check_latency_model(obj)


def supernet_space(supernet_dir: str) -> SearchSpace:
    """The search space stored in a supernet folder's config.json (read without loading weights)."""
    from ..supernet import CONFIG_NAME, SuperBertConfig

    file = Path(supernet_dir) / CONFIG_NAME
    if not file.is_file():
        raise SearchConfigError(f"supernet folder {supernet_dir} has no {CONFIG_NAME}")
    try:
        return SuperBertConfig.from_dict(json.loads(file.read_text())).space
    except json.JSONDecodeError as err:
        raise SearchConfigError(f"{file} is not valid JSON: {err}") from None


def resolve_space(config: SearchConfig, space: SearchSpace | str | dict | None) -> SearchSpace:
    chosen = space if space is not None else config.space
    outer = supernet_space(config.supernet) if config.supernet else None
    if chosen is None:
        if outer is None:
            raise SearchConfigError("no search space: give a supernet folder (its space is used) or a space")
        return outer
    chosen = SearchSpace.load(chosen)
    if outer is not None:
        m, big = chosen.max_arch, outer.max_arch
        too_big = [d for d in ("layers", "hidden", "ffn", "qkv") if getattr(m, d) > getattr(big, d)]
        if too_big or chosen.attention != outer.attention or chosen.head_size != outer.head_size:
            raise SearchConfigError(
                f"search space '{chosen.name}' (max {m}, '{chosen.attention}' cut) does not fit the supernet's space "
                f"'{outer.name}' (max {big}, '{outer.attention}' cut); search a sub-space of the supernet's")
    return chosen


def build_evaluator(config: SearchConfig) -> Evaluator:
    if config.evaluator is None:
        raise SearchConfigError("no evaluator: set evaluator to finetune, loss or module:function, "
                                "or pass one to run_search(evaluator=...)")
    if config.evaluator == "loss":
        return LossEvaluator(config.supernet, max_sequences=config.loss_max_sequences,
                             batch_size=config.loss_batch_size, seed=config.seed)
    if config.evaluator == "finetune":
        return FinetuneEvaluator(config.supernet, tuple(config.tasks), config.data, budget=dict(config.budget),
                                 seed=config.seed, tokenizer_dir=config.tokenizer)
    obj = import_callable(config.evaluator)
    if isinstance(obj, type):
        obj = obj()
    evaluator = as_evaluator(obj)
    if isinstance(evaluator, CallableEvaluator):
        evaluator.name = config.evaluator
    return evaluator


# ----- the output folder --------------------------------------------------------------------------------
def _prepare_out(config: SearchConfig, window: LatencyWindow, space: SearchSpace, evaluator_name: str,
                 log: CandidateLog | None) -> list[CandidateRecord]:
    """Check / create the output folder; return the records to resume from."""
    if log is None:
        return []
    out = log.path.parent
    header = {"config": config.result_relevant(), "space": space.to_dict(), "window": window.to_dict(),
              "evaluator": evaluator_name}
    config_file = out / CONFIG_FILE
    has_run = log.path.exists() or config_file.exists()
    if has_run and not config.resume:
        if not config.overwrite:
            raise SearchConfigError(f"{out} already holds a search ({CANDIDATES_FILE}/{CONFIG_FILE}); pass --resume "
                                    f"to continue it, --overwrite to start over, or choose a new --out")
        for name in (CANDIDATES_FILE, CONFIG_FILE, BEST_FILE, PLOT_FILE):
            (out / name).unlink(missing_ok=True)
        has_run = False
    if has_run:
        if not config_file.exists():
            raise SearchConfigError(f"{out} has {CANDIDATES_FILE} but no {CONFIG_FILE}; cannot check that --resume "
                                    f"continues the same search")
        stored = json.loads(config_file.read_text())
        diffs = _differences(stored, json.loads(json.dumps(header)))
        if diffs:
            raise SearchConfigError(f"--resume: this search differs from the one in {out}: " + "; ".join(diffs)
                                    + ". Use the same settings, or a new --out")
        return log.read(repair=True)
    atomic_write_json(config_file, {**header, "run": {k: config.to_dict()[k] for k in RUN_ONLY_KEYS}})
    return []


def _differences(stored: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(current)):
        if prefix == "" and key == "run":
            continue
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12)):
            out.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return out


def _best_payload(records: list[CandidateRecord], result_meta: dict[str, Any], top_k: int) -> dict[str, Any]:
    ranked = sorted(records, key=sort_key)[:top_k]
    return {**result_meta, "evaluated": len(records),
            "best": [r.comparable() for r in ranked]}


# ----- the search --------------------------------------------------------------------------------------
def run_search(config: SearchConfig | dict[str, Any], *, evaluator: Evaluator | Callable | None = None,
               predictor: LatencyModel | None = None, space: SearchSpace | str | dict | None = None,
               on_record: Callable[[CandidateRecord], None] | None = None) -> SearchResult:
    """Run a whole search (see the module docstring) and return its `SearchResult`.

    `config` is a `SearchConfig` or a dict of its fields. `evaluator`, `predictor` and `space` override the
    config's (any object with the evaluator / predictor interface, or a plain callable as evaluator).
    `on_record` is called with each record as it is written (progress hooks, tests).
    """
    started = time.perf_counter()
    if isinstance(config, dict):
        config = SearchConfig.from_dict(config)
    else:
        config.validate()
    if predictor is None:
        if not config.predictor:
            raise SearchConfigError("no latency predictor: give a predictor file (--predictor FILE) "
                                    "or pass one to run_search(predictor=...)")
        predictor = load_predictor(config.predictor)
    predictor = check_latency_model(predictor)
    space = resolve_space(config, space)
    window = LatencyWindow.build(predictor, speedup=config.speedup, latency_ms=config.latency_ms, window=config.window)
    evaluator = as_evaluator(evaluator) if evaluator is not None else build_evaluator(config)
    sampler = AdmissibleSampler(space, predictor, window, max_draws=config.max_draws)
    sampler.check_feasible()  # before any evaluator loads or any file is written
    if callable(getattr(evaluator, "check", None)):
        evaluator.check()
    params = MethodParams(config.population, config.mutation_prob, config.explore_prob, config.mutation_steps,
                          config.max_redraws, config.fast_pool)
    generations = 1 if config.method == "fast" else config.generations

    backend = make_backend(evaluator, config.workers, config.threads)
    with backend:
        writer = getattr(backend, "is_writer", True)
        log = CandidateLog(Path(config.out) / CANDIDATES_FILE) if config.out else None
        if writer:
            prepared = _guarded(lambda: _prepare_out(config, window, space, evaluator.name, log))
        else:
            prepared = None
        if hasattr(backend, "broadcast"):  # torchrun: rank 0 reads the files, every rank gets the outcome
            prepared = backend.broadcast(prepared)
        if isinstance(prepared, BaseException):
            raise prepared
        previous_records: list[CandidateRecord] = prepared
        resumed = len(previous_records)

        meta = {"method": config.method, "evaluator": evaluator.name, "seed": config.seed,
                "window": window.to_dict(), "space": space.name, "generations": []}
        records: list[CandidateRecord] = []
        taken: set[Arch] = set()
        evaluated = 0
        progress = _progress(config, writer, generations * params.population, resumed)
        try:
            for generation in range(generations):
                last = [r for r in records if r.generation == generation - 1]
                plan = propose_generation(config.method, generation, seed=config.seed, sampler=sampler,
                                          params=params, taken=taken,
                                          previous=[(Arch.parse(r.arch), r.fitness) for r in last])
                taken.update(p.arch for p in plan.proposals)
                meta["generations"].append({"generation": generation, "candidates": len(plan.proposals),
                                            "origins": _count(p.origin for p in plan.proposals), **plan.stats})
                if generation == 0 and progress is not None and config.method == "fast":
                    progress.total = len(plan.proposals)
                    progress.refresh()
                done = [r for r in previous_records if r.generation == generation]
                _check_recorded(done, plan.proposals, generation)
                records.extend(done)
                base = sum(g["candidates"] for g in meta["generations"][:-1])  # index of this generation's slot 0
                todo = [(base + slot, slot, p) for slot, p in enumerate(plan.proposals) if slot >= len(done)]
                if todo:
                    new = _evaluate_in_order(backend, todo, generation, sampler, log if writer else None,
                                             on_record, progress)
                    records.extend(new)
                    evaluated += len(new)
                if writer and config.out:  # after every generation, so a long search can be watched
                    atomic_write_json(Path(config.out) / BEST_FILE, _best_payload(records, meta, config.top_k))
                    if config.plot:
                        from .plots import plot_search

                        plot_search(records, window, Path(config.out) / PLOT_FILE,
                                    title=f"{config.method} search, {evaluator.name} evaluator, "
                                          f"{window.speedup:.2f}x target")
        finally:
            if progress is not None:
                progress.close()

    best = sorted(records, key=sort_key)[:config.top_k]
    return SearchResult(best, records, window, space, config.method, meta["generations"], resumed, evaluated,
                        round(time.perf_counter() - started, 3), Path(config.out) if config.out else None)


def _check_recorded(done: list[CandidateRecord], proposals, generation: int) -> None:
    """Records a generation already has from an earlier run must be exactly its first proposals."""
    if len(done) > len(proposals):
        raise SearchConfigError(f"--resume: {CANDIDATES_FILE} has more candidates in generation {generation} than "
                                f"this search proposes; use a new --out")
    for record, proposal in zip(done, proposals):
        if record.arch != str(proposal.arch):
            raise SearchConfigError(
                f"--resume: {CANDIDATES_FILE} has {record.arch} at generation {generation} slot {record.slot}, but "
                f"this search proposes {proposal.arch} there; the file was written by a different search (or with a "
                f"different predictor). Use a new --out.")


def _guarded(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UserError as err:
        return err


def _count(items) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _progress(config: SearchConfig, writer: bool, total: int, initial: int):
    if not (config.progress and writer):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"{config.method} search", unit="arch")


def _evaluate_in_order(backend, todo, generation: int, sampler: AdmissibleSampler, log: CandidateLog | None,
                       on_record, progress) -> list[CandidateRecord]:
    """Evaluate `todo` ((index, slot, proposal)) on `backend`; write records strictly in index order."""
    by_index = {index: (slot, proposal) for index, slot, proposal in todo}
    ready: dict[int, EvalResult] = {}
    order = [index for index, _, _ in todo]
    written: list[CandidateRecord] = []
    next_pos = 0
    for result in backend.evaluate([(index, proposal.arch) for index, _, proposal in todo]):
        ready[result.index] = result
        while next_pos < len(order) and order[next_pos] in ready:
            index = order[next_pos]
            slot, proposal = by_index[index]
            record = _record(index, generation, slot, proposal, ready.pop(index), sampler)
            if log is not None:
                log.append(record)
            if on_record is not None:
                on_record(record)
            if progress is not None:
                progress.update(1)
                if record.fitness is not None:
                    progress.set_postfix_str(f"{record.arch} fitness {record.fitness:.4g}")
            written.append(record)
            next_pos += 1
    return written


def _record(index: int, generation: int, slot: int, proposal, result: EvalResult,
            sampler: AdmissibleSampler) -> CandidateRecord:
    evaluation: Evaluation = result.evaluation
    ms = sampler.latency(proposal.arch)
    # Round-trip through JSON now, so an uninterrupted run uses exactly the values a resumed one reads back.
    scores = json.loads(json.dumps({k: finite_or_none(v) for k, v in evaluation.scores.items()}))
    return CandidateRecord(
        index=index, generation=generation, slot=slot, arch=str(proposal.arch),
        latency_ms=ms, speedup=sampler.window.reference_ms / ms, scores=scores,
        fitness=finite_or_none(evaluation.fitness), origin=proposal.origin,
        parent=str(proposal.parent) if proposal.parent is not None else None,
        wall_s=result.wall_s, worker=result.worker)
