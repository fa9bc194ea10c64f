"""`autotinybert finetune` (one task) and `autotinybert evaluate` (a GLUE/SQuAD suite, printed like the paper)."""

from __future__ import annotations

from . import Command


def run_finetune(config) -> int:
    from ..downstream import finetune

    r = finetune(config.model, config.task, config.data, config.out, config.settings(), overwrite=config.overwrite)
    extra = f" ({r.data['note']})" if r.data.get("note") else ""
    print(f"{r.task}: {r.main_metric} best {100 * r.best_score:.2f} (step {r.best_step}), final "
          f"{100 * r.final_score:.2f} after {r.steps} steps, {r.wall_s:.0f} s{extra}")
    print(f"wrote {config.out}/result.json")
    return 0


def run_evaluate(config) -> int:
    from ..downstream import evaluate_suite
    from ..io import check_output

    check_output(config.out, [("model", config.model), ("data", config.data)])
    suite = evaluate_suite(config.model, config.tasks, config.data, config.out, config.settings(),
                           resume=config.resume, overwrite=config.overwrite)
    for which in ("best", "final"):
        row = suite.table_row(which)
        cells = list(row.items())[1:]
        print(f"[{which} dev score] " + "  ".join(f"{k} {v}" for k, v in cells))
    for task, score in suite.tasks.items():
        if score.note:
            print(f"note ({task}): {score.note}")
    print(f"wrote {config.out}/suite.json")
    return 0


COMMANDS = [
    Command("finetune", "fine-tune a model on one GLUE task or SQuAD and score it with the official metric",
            "autotinybert.downstream.config:FinetuneCommandConfig", run_finetune,
            examples=("autotinybert finetune model=runs/best task=sst2 data=/data/glue out=runs/best-sst2",
                      "autotinybert finetune ... learning_rate=3e-5 epochs=3 max_train_examples=8000")),
    Command("evaluate", "fine-tune and score a model on several tasks; print a row like the paper's tables",
            "autotinybert.downstream.config:EvaluateCommandConfig", run_evaluate,
            examples=("autotinybert evaluate model=runs/best tasks=sst2,mrpc,stsb,squad data=/data/glue out=runs/ev",)),
]
