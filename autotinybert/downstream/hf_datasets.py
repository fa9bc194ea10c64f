"""Optional: the same tasks from the Hugging Face hub (`datasets`, online), mapped to our example types.

    load_task(get_task("rte"), "hf")    # GLUE configs of "nyu-mll/glue"; "squad" (rajpurkar/squad) for SQuAD

Needs ``pip install autotinybert[datasets]`` and network access. Labels are mapped by name where the hub's order
differs from the GLUE TSV files (MNLI: the hub has entailment/neutral/contradiction).
"""

from __future__ import annotations

from typing import Any, Iterable

from .data import SquadExample, TaskData, TextExample
from .tasks import TaskError, TaskSpec

# task -> (text_a field, text_b field or None)
FIELDS: dict[str, tuple[str, str | None]] = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"), "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}
HF_SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "mnli": (("dev_matched", "validation_matched"), ("dev_mismatched", "validation_mismatched")),
}


def map_glue_rows(spec: TaskSpec, rows: Iterable[dict[str, Any]], label_names: list[str] | None,
                  split: str) -> tuple[TextExample, ...]:
    """Hub rows (dicts) -> `TextExample`s with our label indices; unlabeled rows (label -1, test sets) are an error."""
    a_key, b_key = FIELDS[spec.name]
    index = {label: i for i, label in enumerate(spec.labels)}
    out = []
    for n, row in enumerate(rows):
        raw = row["label"]
        if spec.kind == "regression":
            label: float | int = float(raw)
        else:
            if raw is None or int(raw) < 0:
                raise TaskError(f"hf {spec.name} {split} row {n}: no label (a test split?)")
            # Binary tasks whose GLUE files use 0/1 keep the hub's integer; NLI tasks map by name.
            name = label_names[int(raw)] if label_names and spec.labels[0] not in ("0", "1") else str(int(raw))
            if name not in index:
                raise TaskError(f"hf {spec.name} {split} row {n}: label {name!r} not in {list(spec.labels)}")
            label = index[name]
        out.append(TextExample(f"{split}-{n}", row[a_key], row[b_key] if b_key else None, label))
    return tuple(out)


def map_squad_rows(rows: Iterable[dict[str, Any]]) -> tuple[SquadExample, ...]:
    return tuple(SquadExample(str(r["id"]), r.get("title", ""), r["question"], r["context"],
                              tuple(r["answers"]["text"]), tuple(int(s) for s in r["answers"]["answer_start"]))
                 for r in rows)


def load_hf_task(spec: TaskSpec, need_train: bool = True) -> TaskData:
    try:
        import datasets
    except ImportError:
        raise TaskError("data 'hf' needs the `datasets` package: pip install 'autotinybert[datasets]'") from None
    if spec.kind == "span":
        ds = datasets.load_dataset("rajpurkar/squad")
        train = map_squad_rows(ds["train"]) if need_train else ()
        return TaskData(spec.name, train, {"dev": map_squad_rows(ds["validation"])}, "hf:rajpurkar/squad")
    ds = datasets.load_dataset("nyu-mll/glue", spec.name)
    names = getattr(ds["train"].features["label"], "names", None)
    train = map_glue_rows(spec, ds["train"], names, "train") if need_train else ()
    splits = HF_SPLITS.get(spec.name, (("dev", "validation"),))
    dev = {ours: map_glue_rows(spec, ds[theirs], names, ours) for ours, theirs in splits}
    return TaskData(spec.name, train, dev, f"hf:nyu-mll/glue/{spec.name}")
