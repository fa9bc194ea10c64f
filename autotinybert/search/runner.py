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
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_write_json, check_output, check_safetensors
from ..space import SearchSpace
from .evaluators import (CallableEvaluator, Evaluation, Evaluator, FinetuneEvaluator, LossEvaluator, as_evaluator,
                         import_callable)
from .methods import METHODS, MethodParams, propose_generation
from .parallel import EvalResult, make_backend
from .records import CANDIDATES_FILE, CandidateLog, CandidateRecord, finite_or_none, sort_key
from .sampling import DEFAULT_MAX_DRAWS, AdmissibleSampler
from .config import EVALUATORS, RUN_ONLY_KEYS, SearchConfig, SearchConfigError
from .target import LatencyModel, LatencyWindow, check_latency_model

CONFIG_FILE = "config.json"
BEST_FILE = "best.json"
PLOT_FILE = "search.png"


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
    front: list[CandidateRecord] | None = None  # method pareto: the non-dominated candidates, fastest first

    @property
    def best_arch(self) -> Arch:
        return Arch.parse(self.best[0].arch)


# ----- building the pieces -----------------------------------------------------------------------------
def load_predictor(spec: str, backend: str | None = None) -> LatencyModel:
    """A predictor file (`autotinybert.latency.LatencyPredictor.load`) or ``module:attr`` (an object with
    ``predict``/``reference_ms``, or a no-argument factory returning one). With `backend`, a predictor file
    measured through another latency backend is refused (`DeviceMismatchError`)."""
    path = Path(spec)
    if path.exists() or ":" not in spec:
        if not path.exists():
            raise SearchConfigError(f"latency predictor file {spec} does not exist (build one with the latency tools)")
        from ..latency import LatencyPredictor

        predictor = LatencyPredictor.load(path)
        # Latency measured on another machine or with other settings is not this machine's latency:
        # other settings raise, another CPU or library version warns.
        predictor.check_device({"backend": backend} if backend else None)
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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
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
    if config.evaluator in ("loss", "finetune") and not config.supernet:  # checked here, where it is needed:
        # run_search(evaluator=callable) users give no supernet
        raise SearchConfigError(f"the {config.evaluator} evaluator needs a supernet folder (supernet=DIR)")
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
    check_output(out, [(k, getattr(config, k, None)) for k in ("supernet", "predictor", "data", "tokenizer")])
    header = {"config": config.result_relevant(), "space": space.to_dict(), "window": window.to_dict(),
              "evaluator": evaluator_name}
    config_file = out / CONFIG_FILE
    has_run = log.path.exists() or config_file.exists()
    if has_run and not config.resume:
        if not config.overwrite:
            raise SearchConfigError(f"{out} already holds a search ({CANDIDATES_FILE}/{CONFIG_FILE}); pass resume=true "
                                    f"to continue it, overwrite=true to start over, or choose a new out")
        for name in (CANDIDATES_FILE, CONFIG_FILE, BEST_FILE, PLOT_FILE, "pareto.jsonl", "pareto.png"):
            (out / name).unlink(missing_ok=True)
        has_run = False
    if has_run:
        if not config_file.exists():
            raise SearchConfigError(f"{out} has {CANDIDATES_FILE} but no {CONFIG_FILE}; cannot check that resume=true "
                                    f"continues the same search")
        try:
            stored = json.loads(config_file.read_text())
        except (OSError, ValueError) as err:
            raise SearchConfigError(f"{config_file} is unreadable ({err}); pass overwrite=true to start over") from None
        old_out = (stored.get("run") or {}).get("out") if isinstance(stored, dict) else None
        diffs = _differences(stored, json.loads(json.dumps(header)), same=_moved_with(old_out, out))
        if diffs:
            raise SearchConfigError(f"resume=true: this search differs from the one in {out}: " + "; ".join(diffs)
                                    + ". Use the same settings, or a new out folder")
        return log.read(repair=True)
    atomic_write_json(config_file, {**header, "run": {k: config.to_dict()[k] for k in RUN_ONLY_KEYS}})
    return []


def _moved_with(old_out: Any, out: Path) -> Callable[[Any, Any], bool]:
    """Whether two stored paths are one file seen from a search folder that was moved (with its run) from
    `old_out` to `out`: the same path relative to the folder."""
    if not isinstance(old_out, str) or not old_out:
        return lambda a, b: False
    old_root, new_root = os.path.abspath(old_out), os.path.abspath(out)

    def same(a: Any, b: Any) -> bool:
        return (isinstance(a, str) and isinstance(b, str) and os.path.isabs(a) and os.path.isabs(b)
                and os.path.relpath(a, old_root) == os.path.relpath(b, new_root))

    return same


def _differences(stored: dict, current: dict, prefix: str = "",
                 same: Callable[[Any, Any], bool] = lambda a, b: False) -> list[str]:
    out = []
    for key in sorted(set(stored) | set(current)):
        if prefix == "" and key == "run":
            continue
        a, b = stored.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.", same)
        elif a != b and not (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12)) \
                and not same(a, b):
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
    config = SearchConfig.load(config)
    if config.out:  # a bad out (read-only, under a file, an input's folder) fails before anything loads
        check_output(config.out, [(k, getattr(config, k, None)) for k in ("supernet", "predictor", "data",
                                                                           "tokenizer")])
    if config.supernet and (Path(config.supernet) / "model.safetensors").is_file():
        check_safetensors(Path(config.supernet) / "model.safetensors", "supernet weights")  # truncated: now
    if predictor is None:
        if not config.predictor:
            raise SearchConfigError("no latency predictor: give a predictor file (predictor=FILE) "
                                    "or pass one to run_search(predictor=...)")
        predictor = load_predictor(config.predictor, config.backend)
    predictor = check_latency_model(predictor)
    space = resolve_space(config, space)
    if callable(getattr(predictor, "check_space", None)):
        predictor.check_space(space)  # a predictor fitted on another (smaller) space extrapolates: refused
    if config.method == "pareto":
        return _run_pareto(config, evaluator, predictor, space, on_record, started)
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
        prepared = _PreparedOut.attempt(lambda: _prepare_out(config, window, space, evaluator.name, log)) \
            if writer else None
        if hasattr(backend, "broadcast"):  # torchrun: rank 0 reads the files, every rank gets the outcome
            prepared = backend.broadcast(prepared)
        previous_records = prepared.records_or_raise()
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
        raise SearchConfigError(f"resume=true: {CANDIDATES_FILE} has more candidates in generation {generation} than "
                                f"this search proposes; use a new out folder")
    for record, proposal in zip(done, proposals):
        if record.arch != str(proposal.arch):
            raise SearchConfigError(
                f"resume=true: {CANDIDATES_FILE} has {record.arch} at generation {generation} slot {record.slot}, but "
                f"this search proposes {proposal.arch} there; the file was written by a different search (or with a "
                f"different predictor). Use a new out folder.")


@dataclass(frozen=True)
class _PreparedOut:
    """What preparing the output folder gave: the records to resume from, or the refusal to raise on every rank."""

    records: list[CandidateRecord]
    refusal: UserError | None = None

    @classmethod
    def attempt(cls, prepare: Callable[[], list[CandidateRecord]]) -> _PreparedOut:
        try:
            return cls(prepare())
        except UserError as err:
            return cls([], err)

    def records_or_raise(self) -> list[CandidateRecord]:
        if self.refusal is not None:
            raise self.refusal
        return self.records


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


def _run_pareto(config: SearchConfig, evaluator, predictor: LatencyModel, space: SearchSpace, on_record,
                started: float) -> SearchResult:
    """`method=pareto` (search/pareto.py): the same output folder, resume and parallel evaluation as the other
    methods; the window recorded in config.json is the space's predicted latency span."""
    from .pareto import require_optuna, run_pareto, space_range

    require_optuna()  # before an evaluator loads or a file is written
    window = space_range(space, predictor)
    evaluator = as_evaluator(evaluator) if evaluator is not None else build_evaluator(config)
    if callable(getattr(evaluator, "check", None)):
        evaluator.check()
    backend = make_backend(evaluator, config.workers, config.threads)
    with backend:
        writer = getattr(backend, "is_writer", True)
        log = CandidateLog(Path(config.out) / CANDIDATES_FILE) if config.out else None
        prepared = _PreparedOut.attempt(lambda: _prepare_out(config, window, space, evaluator.name, log)) \
            if writer else None
        if hasattr(backend, "broadcast"):
            prepared = backend.broadcast(prepared)
        previous = prepared.records_or_raise()
        progress = _progress(config, writer, config.generations * config.population, len(previous))
        try:
            outcome = run_pareto(config, evaluator=evaluator, predictor=predictor, space=space, backend=backend,
                                 log=log, previous=previous, writer=writer, progress=progress, on_record=on_record)
        finally:
            if progress is not None:
                progress.close()
    records = outcome["records"]
    best = sorted(records, key=sort_key)[:config.top_k]
    return SearchResult(best, records, window, space, "pareto", outcome["generations"], len(previous),
                        len(records) - len(previous), round(time.perf_counter() - started, 3),
                        Path(config.out) if config.out else None, front=outcome["front"])
