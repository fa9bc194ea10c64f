"""`autotinybert search` (architecture search under a latency constraint) and `autotinybert rank-eval`."""

from __future__ import annotations

import json

from ..config import Config, PathStr, path_field
from ..errors import UserError
from . import Command


class RankEvalConfig(Config):
    """Ranking quality of score set A (the proxy, e.g. a loss-evaluator search's candidates.jsonl) against B (the
    reference, e.g. a finetune one) over the archs both score: the paper's pairwise accuracy (Appendix E) and
    Kendall's tau-b. Each file is JSONL with 'arch' and the score key (top level or under 'scores'), or a JSON
    object {arch: score}."""

    a: PathStr = path_field("", positional=True, min_length=1)
    """Score file A (the proxy, f)."""
    b: PathStr = path_field("", positional=True, min_length=1)
    """Score file B (the reference, s)."""
    key_a: str = "fitness"
    """Score key in A."""
    key_b: str = "fitness"
    """Score key in B."""
    lower_better_a: bool = False
    """A's score is better when lower (e.g. a loss)."""
    lower_better_b: bool = False
    """B's score is better when lower."""
    as_json: bool = False
    """Print the result as JSON."""


def run_search_command(config) -> int:
    from ..search import run_search
    from ..search.parallel import distributed_world

    if not config.out:
        raise UserError("give an output folder: out=DIR")
    result = run_search(config)
    rank, _ = distributed_world()
    if rank != 0:
        return 0
    if result.front is not None:
        return _print_front(result)
    print(f"{result.method} search: {result.window.describe()}")
    print(f"space '{result.space.name}' ({result.space.size():,} archs); {len(result.candidates)} candidates "
          f"({result.resumed} from the earlier run, {result.evaluated} evaluated now) in {result.wall_s:.1f} s")
    for g in result.generations:
        origins = ", ".join(f"{n} {k}" for k, n in g["origins"].items())
        print(f"  generation {g['generation']}: {origins}; {g['sampler_draws']} draws, "
              f"{g['sampler_rejected_latency']} outside the window")
    print(f"top {len(result.best)}:")
    for i, r in enumerate(result.best, 1):
        scores = " ".join(f"{k}={v:.4g}" for k, v in r.scores.items() if v is not None)
        fit = "failed" if r.fitness is None else f"{r.fitness:.4g}"
        print(f"  {i}. {r.arch}  fitness {fit}  {r.latency_ms:.3f} ms ({r.speedup:.2f}x)  {scores}")
    print(f"wrote {result.out}/candidates.jsonl, best.json" + (", search.png" if config.plot else ""))
    return 0


def _print_front(result) -> int:
    print(f"pareto search (NSGA-II) over space '{result.space.name}' ({result.space.size():,} archs): "
          f"{len(result.candidates)} candidates ({result.resumed} from the earlier run, {result.evaluated} evaluated "
          f"now) in {result.wall_s:.1f} s; predicted latency {result.window.low_ms:.3f}..{result.window.high_ms:.3f} "
          f"ms, BERT-base {result.window.reference_ms:.3f} ms")
    print(f"front: {len(result.front)} non-dominated archs (score up, latency down), fastest first:")
    for r in result.front:
        print(f"  {r.arch:<22} {r.latency_ms:9.3f} ms {r.speedup:7.2f}x  fitness {r.fitness:.4g}")
    print(f"wrote {result.out}/candidates.jsonl, pareto.jsonl, best.json, pareto.png")
    return 0


def run_rank_eval(config) -> int:
    from ..search import compare_score_sets, load_scores

    a = load_scores(config.a, config.key_a, negate=config.lower_better_a)
    b = load_scores(config.b, config.key_b, negate=config.lower_better_b)
    comparison = compare_score_sets(a, b)
    q = comparison.quality
    if config.as_json:
        print(json.dumps({**q.to_dict(), "only_in_a": comparison.only_a, "only_in_b": comparison.only_b}, indent=2))
        return 0
    print(f"archs compared   {q.n} ({q.pairs} pairs)")
    print(f"pairwise acc.    {q.pairwise_accuracy:.4f}")
    print(f"Kendall tau-b    {q.kendall_tau:.4f}  (p = {q.kendall_p_value:.3g})")
    for name, only in (("A", comparison.only_a), ("B", comparison.only_b)):
        if only:
            print(f"ignored: {len(only)} arch(s) only in {name}: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''}")
    return 0


COMMANDS = [
    Command("search", "search the best sub-architecture under a latency constraint",
            "autotinybert.search.config:SearchConfig", run_search_command,
            examples=("autotinybert search supernet=runs/supernet predictor=runs/latency/predictor.json speedup=10 "
                      "evaluator=loss out=runs/search10x",
                      "autotinybert search ... evaluator=finetune tasks=[SST-2,MRPC] data=/path/to/glue "
                      "budget.max_steps=200",
                      "autotinybert search ... out=runs/search10x resume=true     # continue an interrupted search",
                      "torchrun --nproc-per-node 4 -m autotinybert search ...      # evaluate over 4 ranks",
                      "autotinybert search --config search.yaml seed=3",
                      "autotinybert search ... method=pareto generations=8 population=24 out=runs/front   "
                      "# the score/latency front in one search")),
    Command("rank-eval", "ranking quality of one score set against another (pairwise accuracy, Kendall tau)",
            f"{__name__}:RankEvalConfig", run_rank_eval,
            examples=("autotinybert rank-eval runs/loss/candidates.jsonl runs/ft/candidates.jsonl",
                      "autotinybert rank-eval a.jsonl b.jsonl key_a=loss lower_better_a=true key_b=SST-2")),
]
