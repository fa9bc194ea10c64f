"""The task registry: the nine GLUE tasks and SQuAD v1.1, with their files, labels, metrics and Table D.1 defaults.

    spec = get_task("sst2")          # also accepts "SST-2", "sst-2"
    spec.labels, spec.main_metric    # ("0", "1"), "accuracy"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import UserError

Kind = Literal["classification", "regression", "span"]


class TaskError(UserError):
    """An unknown task, a missing data file or a malformed row."""


@dataclass(frozen=True)
class TSVLayout:
    """Where the fields sit in a GLUE TSV row (column indices; negative counts from the end)."""

    text_a: int
    text_b: int | None
    label: int
    header: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task: data layout, label set, metrics and the paper's fine-tuning defaults (Table D.1)."""

    name: str                       # canonical short name: "sst2"
    folder: str                     # GLUE folder name: "SST-2"
    kind: Kind
    labels: tuple[str, ...]         # label strings as written in the files; () for regression and span tasks
    main_metric: str                # the one number the paper's tables show
    dev_files: tuple[tuple[str, str], ...]  # (split name, file name); MNLI has two
    learning_rate: float
    epochs: float
    batch_size: int
    max_seq_length: int
    layout: TSVLayout | None = None  # None for SQuAD (JSON)
    train_file: str = "train.tsv"

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else (len(self.labels) if self.kind == "classification" else 2)

    @property
    def is_glue(self) -> bool:
        return self.kind != "span"


_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    # CoLA: no header; columns source, label, original mark, sentence.
    TaskSpec("cola", "CoLA", "classification", ("0", "1"), "mcc", (("dev", "dev.tsv"),), 1e-5, 10, 32, 128,
             TSVLayout(text_a=3, text_b=None, label=1, header=False)),
    TaskSpec("sst2", "SST-2", "classification", ("0", "1"), "accuracy", (("dev", "dev.tsv"),), 2e-5, 4, 32, 128,
             TSVLayout(text_a=0, text_b=None, label=1)),
    TaskSpec("mrpc", "MRPC", "classification", ("0", "1"), "accuracy", (("dev", "dev.tsv"),), 2e-5, 10, 32, 128,
             TSVLayout(text_a=3, text_b=4, label=0)),
    TaskSpec("stsb", "STS-B", "regression", (), "pearson_spearman", (("dev", "dev.tsv"),), 3e-5, 10, 32, 128,
             TSVLayout(text_a=7, text_b=8, label=9)),
    TaskSpec("qqp", "QQP", "classification", ("0", "1"), "accuracy", (("dev", "dev.tsv"),), 2e-5, 5, 32, 128,
             TSVLayout(text_a=3, text_b=4, label=5)),
    # MNLI: the gold label is the last column (train has 12 columns, dev 16).
    TaskSpec("mnli", "MNLI", "classification", ("contradiction", "entailment", "neutral"), "accuracy",
             (("dev_matched", "dev_matched.tsv"), ("dev_mismatched", "dev_mismatched.tsv")), 3e-5, 4, 32, 128,
             TSVLayout(text_a=8, text_b=9, label=-1)),
    TaskSpec("qnli", "QNLI", "classification", _NLI2, "accuracy", (("dev", "dev.tsv"),), 2e-5, 10, 32, 128,
             TSVLayout(text_a=1, text_b=2, label=-1)),
    TaskSpec("rte", "RTE", "classification", _NLI2, "accuracy", (("dev", "dev.tsv"),), 2e-5, 10, 32, 128,
             TSVLayout(text_a=1, text_b=2, label=-1)),
    # Table D.1 has no WNLI row; GLUE-task defaults (RTE's) are used.
    TaskSpec("wnli", "WNLI", "classification", ("0", "1"), "accuracy", (("dev", "dev.tsv"),), 2e-5, 10, 32, 128,
             TSVLayout(text_a=1, text_b=2, label=-1)),
    TaskSpec("squad", "squad", "span", (), "f1", (("dev", "dev-v1.1.json"),), 3e-5, 4, 16, 384,
             None, train_file="train-v1.1.json"),
)}

GLUE_TASKS = tuple(name for name, t in TASKS.items() if t.is_glue)
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "squad1.1": "squad", "squad-v1.1": "squad", "squad_v1": "squad",
            "mnli-m": "mnli", "mnli-mm": "mnli"}


CUSTOM_TASKS: dict[str, TaskSpec] = {}  # added with `register_task`; TASKS stays the paper's ten


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a custom task (e.g. the demo's ``docpair``); re-registering the same spec is a no-op."""
    existing = TASKS.get(spec.name) or CUSTOM_TASKS.get(spec.name)
    if existing is not None and existing != spec:
        raise TaskError(f"a different task named {spec.name!r} is already registered")
    CUSTOM_TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """The spec of `name` (case-insensitive; GLUE folder names like ``SST-2`` work too)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in CUSTOM_TASKS:
        return CUSTOM_TASKS[key]
    if key not in TASKS:
        raise TaskError(f"unknown task {name!r}; choose one of {', '.join([*TASKS, *CUSTOM_TASKS])}")
    return TASKS[key]


def parse_tasks(text: str | list[str] | tuple[str, ...]) -> list[TaskSpec]:
    """``"sst2,mrpc"`` or a list of names -> specs, in order, without duplicates; ``glue`` means all nine."""
    names = [p for p in (text.split(",") if isinstance(text, str) else text)]
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise TaskError("no task given; pass e.g. sst2,mrpc (or 'glue' for all nine GLUE tasks)")
    out: list[TaskSpec] = []
    for n in names:
        for spec in ([TASKS[g] for g in GLUE_TASKS] if n.lower() == "glue" else [get_task(n)]):
            if spec not in out:
                out.append(spec)
    return out
