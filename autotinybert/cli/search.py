"""`autotinybert search` (architecture search under a latency constraint) and `autotinybert rank-eval`."""

from __future__ import annotations

import json

ORDER = 60

_SEARCH_EPILOG = """examples:
  autotinybert search --supernet runs/supernet --predictor runs/latency/predictor.json --speedup 10 \\
      --method evolved --evaluator finetune --tasks SST-2 MRPC --data /path/to/data --out runs/search10x
  autotinybert search --supernet runs/supernet --predictor runs/latency/predictor.json --latency-ms 4.5 \\
      --evaluator loss --workers 2 --out runs/search-loss
  autotinybert search ... --out runs/search10x --resume          # continue an interrupted search
  torchrun --nproc-per-node 4 -m autotinybert search ...         # evaluate over 4 ranks
  autotinybert search --config search.yaml --seed 3               # YAML keys = SearchConfig fields
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search the best sub-architecture under a latency constraint",
        description="Evolutionary (paper Algorithm 2), random or fast-rule (paper §4.4) search over a supernet's "
                    "space. Candidates must lie in a window around the latency target, as predicted by the latency "
                    "predictor. Writes config.json, candidates.jsonl (one line per evaluated arch), best.json "
                    "(top k) and search.png into --out.",
        epilog=_SEARCH_EPILOG, formatter_class=_formatter())
    p.add_argument("--config", help="YAML/JSON file of SearchConfig keys; command-line options override it")
    p.add_argument("--supernet", help="supernet folder (config.json + model.safetensors)")
    p.add_argument("--predictor", help="latency predictor file (or module:attr giving an object with "
                                       "predict(arch) and reference_ms)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--speedup", type=float, help="target: X times faster than BERT-base (predictor's reference)")
    target.add_argument("--latency-ms", type=float, help="target latency in milliseconds")
    p.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="admissible predicted latency as factors of the target (default 0.85 1.1)")
    p.add_argument("--method", choices=["evolved", "random", "fast"], help="search method (default evolved)")
    p.add_argument("--evaluator", help="finetune | loss | module:function (a Python callable arch -> score(s))")
    p.add_argument("--tasks", nargs="+", help="finetune: tasks, e.g. SST-2 MRPC")
    p.add_argument("--data", help="finetune: data folder (glue/<TASK>/, squad/)")
    p.add_argument("--budget", nargs="+", metavar="KEY=VALUE", help="finetune: downstream Budget fields, "
                                                                     "e.g. max_steps=200 max_train_examples=2000")
    p.add_argument("--tokenizer", help="finetune: tokenizer folder (default: the supernet folder)")
    p.add_argument("--loss-max-sequences", type=int, help="loss: validation sequences to use (default all)")
    p.add_argument("--loss-batch-size", type=int, help="loss: batch size (default 32)")
    p.add_argument("--space", help="search a sub-space of the supernet's (preset name or YAML)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--generations", type=int, help="T (default 4)")
    p.add_argument("--population", type=int, help="S, candidates per generation (default 25)")
    p.add_argument("--mutation-prob", type=float, help="pm, per dimension (default 0.5)")
    p.add_argument("--explore-prob", type=float, help="pe, fresh arch instead of a mutated parent (default 0.5)")
    p.add_argument("--mutation-steps", type=int, help="grid steps a mutated dimension may move (default 4)")
    p.add_argument("--max-redraws", type=int, help="redraws of a bad child before a fresh sample (default 100)")
    p.add_argument("--max-draws", type=int, help="draws per admissible sample before giving up (default 20000)")
    p.add_argument("--fast-pool", type=int, help="fast: rule candidates drawn per layer count (default 16)")
    p.add_argument("--top-k", type=int, help="how many winners best.json lists (default 3)")
    p.add_argument("--seed", type=int, help="seed of every draw (default 0)")
    p.add_argument("--workers", type=int, help="evaluation processes (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default cores / workers)")
    p.add_argument("--resume", action="store_true", default=None, help="continue the search in --out")
    p.add_argument("--overwrite", action="store_true", default=None, help="start over in a used --out")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    p.add_argument("--no-plot", dest="plot", action="store_false", default=None, help="do not write search.png")
    p.set_defaults(func=run_search_command)

    r = subparsers.add_parser(
        "rank-eval", help="ranking quality of one score set against another (pairwise accuracy, Kendall tau)",
        description="Compare two score sets over the same archs: A is the proxy (e.g. a loss-evaluator search's "
                    "candidates.jsonl), B the reference (e.g. a finetune one). Prints the paper's pairwise accuracy "
                    "(Appendix E) and Kendall's tau-b over the archs both score. Each file is JSONL with 'arch' and "
                    "the score key (top level or under 'scores'), or a JSON object {arch: score}.",
        formatter_class=_formatter(),
        epilog="example:\n  autotinybert rank-eval runs/loss/candidates.jsonl runs/ft/candidates.jsonl\n"
               "  autotinybert rank-eval a.jsonl b.jsonl --key-a loss --lower-better-a --key-b SST-2")
    r.add_argument("a", help="score file A (the proxy, f)")
    r.add_argument("b", help="score file B (the reference, s)")
    r.add_argument("--key-a", default="fitness", help="score key in A (default fitness)")
    r.add_argument("--key-b", default="fitness", help="score key in B (default fitness)")
    r.add_argument("--lower-better-a", action="store_true", help="A's score is better when lower (e.g. a loss)")
    r.add_argument("--lower-better-b", action="store_true", help="B's score is better when lower")
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.set_defaults(func=run_rank_eval)


def _formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _parse_budget(items: list[str] | None) -> dict | None:
    from ..search import SearchConfigError

    if not items:
        return None
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SearchConfigError(f"--budget takes KEY=VALUE pairs, got {item!r}")
        try:
            out[key] = json.loads(value)  # numbers, true/false, null; anything else stays a string
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_from_args(args):
    """SearchConfig from --config (if any) overridden by every option given on the command line."""
    from pathlib import Path

    import yaml

    from ..search import SearchConfig, SearchConfigError

    data: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise SearchConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise SearchConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(data, dict):
            raise SearchConfigError(f"config file {path} must hold a mapping of SearchConfig keys")
    overrides = {key: getattr(args, key) for key in (
        "supernet", "predictor", "speedup", "latency_ms", "window", "method", "evaluator", "tasks", "data",
        "tokenizer", "loss_max_sequences", "loss_batch_size", "space", "out", "generations", "population",
        "mutation_prob", "explore_prob", "mutation_steps", "max_redraws", "max_draws", "fast_pool", "top_k", "seed",
        "workers", "threads", "resume", "overwrite", "progress", "plot")}
    overrides["budget"] = _parse_budget(args.budget)
    if args.speedup is not None or args.latency_ms is not None:  # a command-line target replaces the file's
        data.pop("speedup", None)
        data.pop("latency_ms", None)
    data.update({k: v for k, v in overrides.items() if v is not None})
    if not data.get("out"):
        raise SearchConfigError("give an output folder (--out DIR)")
    return SearchConfig.from_dict(data)


def run_search_command(args) -> int:
    from ..search import run_search
    from ..search.parallel import distributed_world

    config = config_from_args(args)
    result = run_search(config)
    rank, _ = distributed_world()
    if rank != 0:
        return 0
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


def run_rank_eval(args) -> int:
    from ..search import compare_score_sets, load_scores

    a = load_scores(args.a, args.key_a, negate=args.lower_better_a)
    b = load_scores(args.b, args.key_b, negate=args.lower_better_b)
    comparison = compare_score_sets(a, b)
    q = comparison.quality
    if args.json:
        print(json.dumps({**q.to_dict(), "only_in_a": comparison.only_a, "only_in_b": comparison.only_b}, indent=2))
        return 0
    print(f"archs compared   {q.n} ({q.pairs} pairs)")
    print(f"pairwise acc.    {q.pairwise_accuracy:.4f}")
    print(f"Kendall tau-b    {q.kendall_tau:.4f}  (p = {q.kendall_p_value:.3g})")
    for name, only in (("A", comparison.only_a), ("B", comparison.only_b)):
        if only:
            print(f"ignored: {len(only)} arch(s) only in {name}: {', '.join(only[:5])}{' ...' if len(only) > 5 else ''}")
    return 0
