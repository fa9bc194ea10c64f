"""``method=pareto``: one multi-objective search over the whole space for the front of (score, predicted latency).

The algorithm is Optuna's NSGA-II (`optuna.samplers.NSGAIISampler`: non-dominated sorting, crowding distance,
uniform crossover, per-parameter mutation), driven through Optuna's ask/tell interface:

* the genome is the space's free dimensions as integer grids (layers, hidden, ffn, and heads or qkv);
* a generation is `population` *new* archs: a proposal equal to an arch already scored (or already in this
  generation) is told that arch's result and not evaluated again, so `generations x population` is exactly the
  number of evaluations (at most ``population x max_redraws`` asks per generation);
* the trials of a generation are all asked first, evaluated (in parallel when workers > 1), then told in ask
  order, so the sampler's state depends only on the seed and the recorded results.

Resume replays that: every generation is asked again from the same seed, the recorded candidates stand in for
their evaluations (they must be exactly the proposals), and only the missing ones are evaluated. A kill and a
resume therefore give the same candidates and the same front as an uninterrupted run.

Why Optuna and not pymoo: Optuna's sampler draws from its own seeded ``RandomState`` (pymoo's ``seed=`` reseeds
the global NumPy and ``random`` generators, which this project never does), and ask/tell over a fixed distribution
dict maps one-to-one onto the space's grid without custom operators.

Files (beside the usual ``config.json`` and ``candidates.jsonl``): ``pareto.jsonl`` (the non-dominated candidates,
fastest first), ``best.json`` (the front, the top k by score, per-generation counts, the hypervolume) and
``pareto.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..arch import Arch
from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text
from ..seeding import derive_seed
from ..space import SearchSpace
from .records import CandidateLog, CandidateRecord, finite_or_none, sort_key
from .target import LatencyModel, LatencyWindow

PARETO_FILE = "pareto.jsonl"
PARETO_PLOT = "pareto.png"


# ----- the front and its hypervolume -------------------------------------------------------------------
def pareto_front(records: Sequence[CandidateRecord]) -> list[CandidateRecord]:
    """The non-dominated records (higher fitness, lower predicted latency), fastest first.

    A record is dominated when another is at least as fast and at least as good and better in one. Failed
    evaluations (fitness None) are never on the front; of exact ties the earlier candidate is kept.
    """
    done = sorted((r for r in records if r.fitness is not None), key=lambda r: (r.latency_ms, -r.fitness, r.index))
    front, best = [], float("-inf")
    for r in done:  # by latency: a record is on the front when it beats every faster one
        if r.fitness > best:
            front.append(r)
            best = r.fitness
    return front


def hypervolume(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by `points` ((score, latency_ms): score maximised, latency minimised) and bounded by
    `reference` (a score below and a latency above every point that should count). Points outside the box add
    nothing. Larger is better; two fronts compare only under the same reference."""
    ref_score, ref_ms = reference
    inside = sorted((ms, s) for s, ms in points if s > ref_score and ms < ref_ms)
    area, best = 0.0, ref_score
    for i, (ms, s) in enumerate(inside):  # sweep by latency: each step adds the strip up to the next point
        best = max(best, s)
        next_ms = inside[i + 1][0] if i + 1 < len(inside) else ref_ms
        area += (next_ms - ms) * (best - ref_score)
    return area


def pick_for_speedup(front: Sequence[CandidateRecord], reference_ms: float, speedup: float,
                     high: float = 1.1) -> CandidateRecord | None:
    """The best-scoring front member whose predicted latency is within ``high x`` the target's (reference_ms /
    speedup); None when every member is slower."""
    budget = high * reference_ms / speedup
    fits = [r for r in front if r.latency_ms <= budget]
    return max(fits, key=lambda r: (r.fitness, -r.latency_ms)) if fits else None


# ----- the genome --------------------------------------------------------------------------------------
def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of the space's dimensions (heads in 'heads' mode, qkv in 'dims' mode)."""
    from optuna.distributions import IntDistribution

    dims = ("layers", "hidden", "ffn", "heads" if space.attention == "heads" else "qkv")
    return {d: IntDistribution(getattr(space, d).low, getattr(space, d).high, step=getattr(space, d).step)
            for d in dims}


def arch_of(params: dict[str, int], space: SearchSpace) -> Arch:
    if space.attention == "heads":
        heads = int(params["heads"])
        return Arch(int(params["layers"]), int(params["hidden"]), int(params["ffn"]), heads, space.head_size * heads)
    return Arch(int(params["layers"]), int(params["hidden"]), int(params["ffn"]), space.heads.low, int(params["qkv"]))


def space_range(space: SearchSpace, predictor: LatencyModel) -> LatencyWindow:
    """The predicted latency span of the space as a window around BERT-base (what config.json records)."""
    ref = float(predictor.reference_ms)
    low, high = float(predictor.predict(space.min_arch)), float(predictor.predict(space.max_arch))
    return LatencyWindow(ref, ref, min(low, high) / ref, max(low, high) / ref)


@dataclass
class _Asked:
    trial: Any  # optuna.trial.Trial
    arch: Arch
    slot: int | None  # position among the generation's new archs; None for a repeat


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("method=pareto needs Optuna: pip install 'autotinybert[pareto]'") from None
    return optuna


def _new_study(seed: int, population: int):
    optuna = require_optuna()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population,
                                            seed=derive_seed(seed, purpose="pareto-nsga2") % (2 ** 32))
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)


def _ask_generation(study, space: SearchSpace, dists: dict[str, Any], population: int, max_asks: int,
                    known: set[Arch]) -> tuple[list[_Asked], int]:
    """Ask until `population` archs not in `known` (nor repeated in this generation) are found, at most `max_asks`
    times; returns every ask in order and the number of repeats."""
    asked: list[_Asked] = []
    fresh: set[Arch] = set()
    repeats = 0
    for _ in range(max_asks):
        if len(fresh) == population:
            break
        trial = study.ask(dists)
        arch = arch_of(trial.params, space)
        if arch in known or arch in fresh:
            asked.append(_Asked(trial, arch, None))
            repeats += 1
            continue
        asked.append(_Asked(trial, arch, len(fresh)))
        fresh.add(arch)
    return asked, repeats


def run_pareto(config, *, evaluator, predictor: LatencyModel, space: SearchSpace, backend, log: CandidateLog | None,
               previous: list[CandidateRecord], writer: bool, progress=None,
               on_record: Callable[[CandidateRecord], None] | None = None) -> dict[str, Any]:
    """The generations of a pareto search (see the module docstring); returns records, front and per-generation
    counts. `previous` holds the records of the run being resumed; `backend` evaluates (`search.parallel`)."""
    from optuna.trial import TrialState

    from .methods import Proposal
    from .runner import _check_recorded

    study = _new_study(config.seed, config.population)
    dists = distributions(space)
    reference_ms = float(predictor.reference_ms)
    results: dict[Arch, CandidateRecord] = {}  # every scored arch -> its record
    records: list[CandidateRecord] = []
    generations: list[dict[str, Any]] = []
    cache: dict[Arch, float] = {}

    def latency(arch: Arch) -> float:
        if arch not in cache:
            cache[arch] = float(predictor.predict(arch))
        return cache[arch]

    for generation in range(config.generations):
        asked, repeats = _ask_generation(study, space, dists, config.population,
                                         config.population * config.max_redraws, set(results))
        new = [a for a in asked if a.slot is not None]
        generations.append({"generation": generation, "candidates": len(new), "asked": len(asked),
                            "repeats": repeats, "origins": {"sampled" if generation == 0 else "nsga2": len(new)}})
        if not new:
            break  # the sampler finds nothing new: the space (or what NSGA-II reaches of it) is exhausted
        origin = "sampled" if generation == 0 else "nsga2"
        done = [r for r in previous if r.generation == generation]
        _check_recorded(done, [Proposal(a.arch, origin) for a in new], generation)
        base = len(records)
        todo = [(base + a.slot, a) for a in new if a.slot >= len(done)]
        generation_records = list(done)
        if todo:
            written = _evaluate(backend, todo, generation, origin, latency, reference_ms,
                                log if writer else None, on_record, progress)
            generation_records.extend(written)
        for record in generation_records:
            results[Arch.parse(record.arch)] = record
        records.extend(generation_records)
        for a in asked:  # tell in ask order: the sampler's state depends on the results only
            r = results[a.arch]
            if r.fitness is None:
                study.tell(a.trial, state=TrialState.FAIL)
            else:
                study.tell(a.trial, [r.fitness, r.latency_ms])
        if writer and config.out:
            write_files(Path(config.out), records, generations, config, evaluator.name, reference_ms)
    return {"records": records, "front": pareto_front(records), "generations": generations}


def _evaluate(backend, todo, generation: int, origin: str, latency, reference_ms: float, log, on_record,
              progress) -> list[CandidateRecord]:
    """Evaluate `todo` ((index, asked)) and return the records in index order (appended to `log` in that order)."""
    by_index = dict(todo)
    order = [index for index, _ in todo]
    ready, written, pos = {}, [], 0
    for result in backend.evaluate([(index, a.arch) for index, a in todo]):
        ready[result.index] = result
        while pos < len(order) and order[pos] in ready:
            index = order[pos]
            asked, res = by_index[index], ready.pop(index)
            ms = latency(asked.arch)
            scores = json.loads(json.dumps({k: finite_or_none(v) for k, v in res.evaluation.scores.items()}))
            record = CandidateRecord(index=index, generation=generation, slot=asked.slot, arch=str(asked.arch),
                                     latency_ms=ms, speedup=reference_ms / ms, scores=scores,
                                     fitness=finite_or_none(res.evaluation.fitness), origin=origin, parent=None,
                                     wall_s=res.wall_s, worker=res.worker)
            if log is not None:
                log.append(record)
            if on_record is not None:
                on_record(record)
            if progress is not None:
                progress.update(1)
            written.append(record)
            pos += 1
    return written


def front_payload(records: Sequence[CandidateRecord], reference_ms: float) -> dict[str, Any]:
    """The front and its hypervolume against (lowest score seen, BERT-base's latency)."""
    front = pareto_front(records)
    scored = [r.fitness for r in records if r.fitness is not None]
    reference = (min(scored) if scored else 0.0, reference_ms)
    return {"front": [r.comparable() for r in front], "hypervolume": hypervolume(
        [(r.fitness, r.latency_ms) for r in front], reference), "hypervolume_reference": list(reference)}


def write_files(out: Path, records: list[CandidateRecord], generations: list[dict[str, Any]], config,
                evaluator_name: str, reference_ms: float) -> None:
    """pareto.jsonl, best.json and (with config.plot) pareto.png, rewritten after every generation."""
    payload = front_payload(records, reference_ms)
    atomic_write_text(out / PARETO_FILE, "".join(json.dumps(r) + "\n" for r in payload["front"]))
    ranked = sorted(records, key=sort_key)[:config.top_k]
    atomic_write_json(out / "best.json", {
        "method": "pareto", "evaluator": evaluator_name, "seed": config.seed, "reference_ms": reference_ms,
        "generations": generations, "evaluated": len(records), "front_size": len(payload["front"]),
        "hypervolume": payload["hypervolume"], "hypervolume_reference": payload["hypervolume_reference"],
        "front": payload["front"], "best": [r.comparable() for r in ranked]})
    if config.plot:
        plot_front(records, out / PARETO_PLOT, reference_ms,
                   title=f"pareto search (NSGA-II), {evaluator_name} evaluator, {len(records)} evaluations")


def plot_front(records: Sequence[CandidateRecord], path: str | Path, reference_ms: float, title: str = "") -> Path:
    """Every candidate (colour = generation) and the front as a staircase, predicted latency on x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    done = [r for r in records if r.fitness is not None]
    front = pareto_front(records)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    if done:
        points = ax.scatter([r.latency_ms for r in done], [r.fitness for r in done], c=[r.generation for r in done],
                            cmap="viridis", s=16, alpha=0.7)
        fig.colorbar(points, ax=ax, label="generation")
        ax.step([r.latency_ms for r in front], [r.fitness for r in front], where="post", color="C3", marker="o",
                label=f"front ({len(front)} archs)")
        ax.legend(loc="lower right")
    ax.set_xlabel(f"predicted latency (ms); BERT-base {reference_ms:.3g} ms on the same backend")
    ax.set_ylabel("fitness")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def read_front(path: str | Path) -> list[CandidateRecord]:
    """The records of a ``pareto.jsonl`` (or of the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / PARETO_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; run a search with method=pareto first")
    return [CandidateRecord.from_dict({**json.loads(line), "wall_s": 0.0})
            for line in path.read_text().splitlines() if line.strip()]


__all__ = ["PARETO_FILE", "PARETO_PLOT", "arch_of", "distributions", "front_payload", "hypervolume", "pareto_front",
           "pick_for_speedup", "plot_front", "read_front", "run_pareto", "space_range"]
