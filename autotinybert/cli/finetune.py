"""`autotinybert finetune` (one task) and `autotinybert evaluate` (a GLUE/SQuAD suite, printed like the paper)."""

from __future__ import annotations

ORDER = 60


def _add_common(p) -> None:
    p.add_argument("--model", required=True, help="model folder (autotinybert or any BERT-like HF model + tokenizer)")
    p.add_argument("--data", required=True,
                   help="data folder in the GLUE layout (TASK/train.tsv, TASK/dev.tsv; glue/TASK also found) with "
                        "squad/ for SQuAD; or 'hf' for Hugging Face datasets (online, needs `datasets`)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="YAML/JSON file of fine-tuning settings (keys of FinetuneConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable), e.g. --set warmup_proportion=0.06")
    g = p.add_argument_group("common settings (default: the task's Table D.1 values)")
    g.add_argument("--lr", dest="learning_rate", type=float)
    g.add_argument("--epochs", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--max-seq-length", type=int)
    g.add_argument("--eval-every", type=int, help="evaluate every N steps (default: every epoch)")
    g.add_argument("--seed", type=int)
    g.add_argument("--max-train-examples", type=int, help="budget: subsample the training set")
    g.add_argument("--max-steps", type=int, help="budget: stop after N optimizer steps")
    g.add_argument("--max-eval-examples", type=int, help="budget: evaluate on a fixed subset")
    g.add_argument("--squad-article-split", type=float, metavar="FRACTION",
                   help="SQuAD without a train file: train on FRACTION of the dev file's articles, evaluate on the rest")
    g.add_argument("--device", help="cpu (default), cuda, or auto")
    g.add_argument("--threads", type=int, help="torch threads")
    g.add_argument("--save-model", choices=["final", "best", "none"], help="weights written to OUT/model")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model on one GLUE task or SQuAD and score it with the official metric",
        description="Fine-tune MODEL on TASK (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, squad) with AdamW "
                    "and linear warm-up/decay; writes OUT/result.json (best and final dev scores, steps, wall time, "
                    "arch), OUT/config.json (resolved settings), OUT/history.jsonl and OUT/model/.")
    p.add_argument("--task", required=True)
    _add_common(p)
    p.set_defaults(func=run_finetune)

    p = subparsers.add_parser(
        "evaluate", help="fine-tune and score a model on several tasks; print a row like the paper's tables",
        description="Run `finetune` for every task in --tasks (comma-separated, or 'glue' for all nine), write "
                    "OUT/<task>/ and OUT/suite.json, and print scores x100 with the GLUE 'Score' and the 'Avg' "
                    "including SQuAD. Finished tasks (OUT/<task>/result.json) are reused unless --no-resume.")
    p.add_argument("--tasks", required=True, help="e.g. sst2,mrpc,stsb,squad or glue")
    p.add_argument("--no-resume", action="store_true", help="re-run tasks that already have a result")
    _add_common(p)
    p.set_defaults(func=run_evaluate)


def _config(args):
    import yaml

    from ..downstream.config import FinetuneConfig
    from ..errors import UserError

    cfg = FinetuneConfig.load(args.config)
    sets = {}
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        sets[key.strip()] = yaml.safe_load(value)
    flags = {k: getattr(args, k) for k in ("learning_rate", "epochs", "batch_size", "max_seq_length", "eval_every",
                                           "seed", "max_train_examples", "max_steps", "max_eval_examples",
                                           "squad_article_split", "device", "threads", "save_model")}
    return cfg.override(**sets).override(**flags)


def run_finetune(args) -> int:
    from ..downstream import finetune

    r = finetune(args.model, args.task, args.data, args.out, _config(args), overwrite=args.overwrite)
    extra = f" ({r.data['note']})" if r.data.get("note") else ""
    print(f"{r.task}: {r.main_metric} best {100 * r.best_score:.2f} (step {r.best_step}), final "
          f"{100 * r.final_score:.2f} after {r.steps} steps, {r.wall_s:.0f} s{extra}")
    print(f"wrote {args.out}/result.json")
    return 0


def run_evaluate(args) -> int:
    from ..downstream import evaluate_suite

    suite = evaluate_suite(args.model, args.tasks, args.data, args.out, _config(args), resume=not args.no_resume,
                           overwrite=args.overwrite)
    for which in ("best", "final"):
        row = suite.table_row(which)
        cells = list(row.items())[1:]
        print(f"[{which} dev score] " + "  ".join(f"{k} {v}" for k, v in cells))
    notes = {t: s.note for t, s in suite.tasks.items() if s.note}
    for task, note in notes.items():
        print(f"note ({task}): {note}")
    print(f"wrote {args.out}/suite.json")
    return 0
