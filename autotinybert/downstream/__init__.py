"""Downstream evaluation: GLUE (nine tasks) and SQuAD v1.1 fine-tuning with the official metrics.

    from autotinybert.downstream import finetune, evaluate_suite, score_supernet_arch, Budget
    result = finetune("models/s1", "sst2", "/data/glue_data", "runs/s1-sst2")        # -> FinetuneResult
    suite = evaluate_suite("models/s1", "sst2,mrpc,stsb", "/data/glue_data", "runs/s1")  # -> SuiteResult

The names load on first access, so the task table (`autotinybert.downstream.tasks`) imports without torch.
"""

from .._lazy import lazy_exports

__all__ = [
    "Budget", "score_supernet_arch", "FinetuneConfig", "FinetuneResult", "EvalRecord", "finetune",
    "SuiteResult", "TaskScore", "aggregate", "evaluate_suite", "TASKS", "GLUE_TASKS", "TaskSpec", "TaskError",
    "get_task", "parse_tasks", "TextExample", "SquadExample", "TaskData", "load_task", "read_glue_file",
    "read_squad_file", "split_by_article", "glue_metrics", "squad_metrics", "normalize_answer", "build_features",
    "decode_spans",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    ".budget": ["Budget", "score_supernet_arch"],
    ".config": ["FinetuneConfig"],
    ".data": ["SquadExample", "TaskData", "TextExample", "load_task", "read_glue_file", "read_squad_file",
              "split_by_article"],
    ".metrics": ["glue_metrics", "normalize_answer", "squad_metrics"],
    ".squad": ["build_features", "decode_spans"],
    ".suite": ["SuiteResult", "TaskScore", "aggregate", "evaluate_suite"],
    ".tasks": ["GLUE_TASKS", "TASKS", "TaskError", "TaskSpec", "get_task", "parse_tasks"],
    ".train": ["EvalRecord", "FinetuneResult", "finetune"],
})
