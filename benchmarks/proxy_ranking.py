"""How well the cheap `loss` evaluator ranks archs compared with the `finetune` evaluator (paper Appendix E, HAT).

On a CPU-scale supernet (the `cpu-mlm` space, one-shot trained with issue 3's `train_supernet`, or a folder given
with --supernet), N admissible archs at one speedup are drawn (a `random` search, so both evaluators see exactly
the same archs) and scored twice through `run_search`:

* `loss`: held-out MLM loss of the sub-model on the training run's validation split (fitness = -loss);
* `finetune`: budgeted fine-tuning of the extracted sub-model on SST-2 and MRPC (fitness = mean dev accuracy).

Reported: pairwise accuracy and Kendall tau between the two fitness lists, the number of archs, and the wall time
per candidate of each evaluator. Everything runs at 1 torch thread.

    python benchmarks/proxy_ranking.py [--quick] --out proxy_ranking.json [--supernet DIR] [--predictor FILE]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def corpus_files(quick: bool) -> list[str]:
    """WikiText-2 (valid + test, 2.4 MB) and, for the full run, a slice of the Wikipedia corpus."""
    files = [str(DATA / "wikitext-2-raw" / "wiki.valid.raw"), str(DATA / "wikitext-2-raw" / "wiki.test.raw")]
    if not quick:
        wiki = sorted((DATA / "corpus" / "jason-feng_wikiVisual").rglob("*"))
        files += [str(p) for p in wiki if p.is_file() and p.suffix in (".txt", ".raw", "")][:4]
    return files


def train_small_supernet(work: Path, quick: bool, minutes: float, steps: int) -> Path:
    """One-shot training of a cpu-mlm supernet: `steps` steps (the LR schedule's length), stopped early by a time
    budget of `minutes`; resumes if a run is already there."""
    from autotinybert.train import train_supernet

    out = work / "supernet"
    config = {
        "out": str(out), "corpus": corpus_files(quick), "tokenizer_vocab_size": 8000, "max_seq_length": 128,
        "space": "cpu-mlm", "batch_size": 32, "archs_per_step": 3, "learning_rate": 5e-4, "max_steps": steps,
        "time_budget_s": 60 * minutes, "val_fraction": 0.02, "val_max_sequences": 512, "device": "cpu",
        "threads": 1, "progress": True, "cache_dir": str(work / "cache"), "eval_every": 10_000,
        "checkpoint_every": 100, "seed": 0,
    }
    resume = (out / "train_config.json").exists()
    return train_supernet({**config, "resume": resume})


def _num(value: float) -> float | None:
    """Rounded, and None for NaN (Kendall's tau is undefined when one side is constant)."""
    return None if value != value else round(value, 4)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--supernet", help="a trained supernet folder (default: train one into --work)")
    p.add_argument("--predictor", help="latency predictor file (default: the analytic FLOPs model)")
    p.add_argument("--work", help="folder for the trained supernet and the two searches (default: beside --out)")
    p.add_argument("--speedup", type=float, default=60.0, help="target speedup (default 60, inside cpu-mlm's range)")
    p.add_argument("--n-archs", type=int, help="archs to score (default 16; --quick 12)")
    p.add_argument("--train-minutes", type=float, help="one-shot training time cap (default 25; --quick 8)")
    p.add_argument("--train-steps", type=int, help="one-shot training steps (default 500; --quick 150)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    started = time.time()

    import torch

    from autotinybert.search import FlopsLatencyModel, compare_score_sets, load_predictor, run_search

    torch.set_num_threads(1)
    quick = args.quick
    n = args.n_archs or (12 if quick else 16)
    work = Path(args.work or Path(args.out).with_suffix("").as_posix() + "_work")
    work.mkdir(parents=True, exist_ok=True)
    supernet = Path(args.supernet) if args.supernet else train_small_supernet(
        work, quick, args.train_minutes or (8 if quick else 25), args.train_steps or (150 if quick else 500))
    predictor = load_predictor(args.predictor) if args.predictor else FlopsLatencyModel()
    budget = {"max_train_examples": 1000 if quick else 2000, "max_steps": 60 if quick else 120,
              "max_eval_examples": 300 if quick else 408, "max_seq_length": 64, "batch_size": 32,
              "learning_rate": 5e-4, "threads": 1}
    common = {"supernet": str(supernet), "speedup": args.speedup, "method": "random", "generations": 1,
              "population": n, "seed": args.seed, "top_k": n, "plot": True, "resume": True}
    loss_run = run_search({**common, "evaluator": "loss", "loss_max_sequences": 256 if quick else 512,
                           "out": str(work / "search_loss")}, predictor=predictor)
    ft_run = run_search({**common, "evaluator": "finetune", "tasks": ["SST-2", "MRPC"], "data": str(DATA),
                         "budget": budget, "out": str(work / "search_finetune")}, predictor=predictor)

    loss = {r.arch: r.fitness for r in loss_run.candidates}
    ft = {r.arch: r.fitness for r in ft_run.candidates}
    quality = compare_score_sets(loss, ft).quality
    per_task = {}
    for task in ("sst2", "mrpc"):
        scores = {r.arch: r.scores[task] for r in ft_run.candidates}
        q = compare_score_sets(loss, scores).quality
        per_task[task] = {"pairwise_accuracy": _num(q.pairwise_accuracy), "kendall_tau": _num(q.kendall_tau)}
    q_tasks = compare_score_sets({r.arch: r.scores["sst2"] for r in ft_run.candidates},
                                 {r.arch: r.scores["mrpc"] for r in ft_run.candidates}).quality
    per_task["sst2_vs_mrpc"] = {"pairwise_accuracy": _num(q_tasks.pairwise_accuracy),
                                "kendall_tau": _num(q_tasks.kendall_tau)}

    rows = []
    ft_by_arch = {r.arch: r for r in ft_run.candidates}
    for r in sorted(loss_run.candidates, key=lambda r: -r.fitness):
        f = ft_by_arch[r.arch]
        rows.append({"arch": r.arch, "speedup": round(r.speedup, 2), "loss": round(r.scores["loss"], 4),
                     "sst2": round(f.scores["sst2"], 4), "mrpc": round(f.scores["mrpc"], 4),
                     "finetune_fitness": round(f.fitness, 4), "loss_s": r.wall_s, "finetune_s": f.wall_s})
    summary = {
        "pairwise_accuracy": _num(quality.pairwise_accuracy),
        "kendall_tau": _num(quality.kendall_tau),
        "n_archs": quality.n,
        "loss_s_per_arch": round(sum(r.wall_s for r in loss_run.candidates) / len(loss_run.candidates), 3),
        "finetune_s_per_arch": round(sum(r.wall_s for r in ft_run.candidates) / len(ft_run.candidates), 3),
    }
    train_metrics = supernet / "metrics.jsonl"
    settings = {
        "quick": quick, "supernet": str(supernet), "space": loss_run.space.name,
        "predictor": args.predictor or "FlopsLatencyModel (analytic)", "window": loss_run.window.to_dict(),
        "tasks": ["SST-2", "MRPC"], "budget": budget, "loss_max_sequences": 256 if quick else 512, "seed": args.seed,
        "kendall_p_value": _num(quality.kendall_p_value), "per_task_ranking": per_task, "threads": 1,
        "searches": [str(work / "search_loss"), str(work / "search_finetune")],
        "supernet_training_lines": sum(1 for _ in train_metrics.open()) if train_metrics.exists() else None,
        "cpu_load_1min_at_end": os.getloadavg()[0],
    }
    print_table(rows, title=f"{n} admissible archs at {args.speedup:g}x (best loss first)")
    print(f"\nper task: {json.dumps(per_task)}")
    print_summary(summary)
    write_result(args.out, "proxy_ranking", summary, rows, settings, started)


if __name__ == "__main__":
    main()
