"""Readers: GLUE TSV files (the layout of the original BERT code) and SQuAD v1.1 JSON, into typed examples.

GLUE files are read as the BERT code reads them: tab-separated, no quote processing (QNLI keeps its stray ``"``),
a UTF-8 BOM dropped (MRPC has one), CoLA without a header. A row with the wrong number of fields or a label
outside the task's label set is an error naming ``file:line`` -- except in QQP, whose reference processors (BERT's
and transformers' `QqpProcessor`: ``except IndexError: continue``) skip rows with missing fields: so does this
reader, and it counts them (`TaskData.skipped`, and the note that reaches result.json).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from .tasks import TaskError, TaskSpec


@dataclass(frozen=True)
class TextExample:
    """One GLUE example. `label` is the class index (classification) or the score (regression)."""

    guid: str
    text_a: str
    text_b: str | None
    label: float | int


@dataclass(frozen=True)
class SquadExample:
    """One SQuAD question with its paragraph and every gold answer (text and character start)."""

    qid: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


@dataclass(frozen=True)
class TaskData:
    """The training examples and every dev split of one task, plus a note on where they came from."""

    task: str
    train: tuple
    dev: dict[str, tuple]
    source: str
    note: str = ""           # e.g. "SQuAD dev split by article (38 train / 10 eval articles)"
    skipped: dict[str, int] = field(default_factory=dict)  # split -> rows skipped for missing fields (QQP)


# Tasks whose reference processors skip a row with missing fields instead of failing.
SKIPS_SHORT_ROWS = frozenset({"qqp"})


@dataclass(frozen=True)
class GlueFile:
    """The examples of one GLUE TSV file and the line numbers of the rows skipped for missing fields."""

    examples: tuple[TextExample, ...]
    skipped_lines: tuple[int, ...] = ()


# ---------------------------------------------------------------- GLUE TSV

def read_tsv_rows(path: str | Path, header: bool, check_width: bool = True) -> list[tuple[int, list[str]]]:
    """(line number, fields) for every data row; checks every row has as many fields as the header (or the first
    row) unless `check_width` is off (then the caller decides what a short row means)."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"missing data file {path}")
    text = path.read_bytes().decode("utf-8-sig")  # drops a leading BOM; no quote processing anywhere
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # final newline (CoLA dev has none)
    rows = []
    width = None
    for number, line in enumerate(lines, start=1):
        fields = line.rstrip("\r").split("\t")
        if width is None:
            width = len(fields)
            if header:
                continue
        if check_width and len(fields) != width:
            raise TaskError(f"{path}:{number}: malformed row: {len(fields)} tab-separated fields, expected {width} "
                            f"(as in {'the header' if header else 'line 1'}); fix or remove the row")
        rows.append((number, fields))
    return rows


def read_glue_file(spec: TaskSpec, path: str | Path, split: str) -> tuple[TextExample, ...]:
    """The examples of one GLUE TSV file of `spec`'s layout."""
    return read_glue_rows(spec, path, split).examples


def read_glue_rows(spec: TaskSpec, path: str | Path, split: str) -> GlueFile:
    """The examples of one GLUE TSV file of `spec`'s layout, and (QQP) the rows skipped for missing fields."""
    layout = spec.layout
    assert layout is not None, spec.name
    skips = spec.name in SKIPS_SHORT_ROWS
    label_index = {label: i for i, label in enumerate(spec.labels)}
    examples, skipped = [], []
    for number, fields in read_tsv_rows(path, layout.header, check_width=not skips):
        try:
            text_a = fields[layout.text_a]
            text_b = fields[layout.text_b] if layout.text_b is not None else None
            raw = fields[layout.label].strip()
        except IndexError:
            if skips:  # QqpProcessor: `except IndexError: continue`
                skipped.append(number)
                continue
            raise TaskError(f"{path}:{number}: row has {len(fields)} fields, too few for {spec.name} "
                            f"(is this the {spec.folder} file?)") from None
        if spec.kind == "regression":
            try:
                label: float | int = float(raw)
            except ValueError:
                raise TaskError(f"{path}:{number}: score {raw!r} is not a number") from None
            if not math.isfinite(label):
                raise TaskError(f"{path}:{number}: score {raw!r} is not finite")
        else:
            if raw not in label_index:
                raise TaskError(f"{path}:{number}: label {raw!r} is not one of {spec.name}'s labels "
                                f"{list(spec.labels)} (a test file without labels, or the wrong task?)")
            label = label_index[raw]
        examples.append(TextExample(f"{split}-{number}", text_a, text_b, label))
    return GlueFile(tuple(examples), tuple(skipped))


def skipped_note(spec: TaskSpec, files: dict[str, GlueFile]) -> str:
    """'' or a sentence counting the rows skipped for missing fields per split (with their first line numbers)."""
    parts = [f"{split} {len(f.skipped_lines):,} (line{'s' if len(f.skipped_lines) > 1 else ''} "
             f"{', '.join(map(str, f.skipped_lines[:5]))}{', ...' if len(f.skipped_lines) > 5 else ''})"
             for split, f in files.items() if f.skipped_lines]
    if not parts:
        return ""
    return (f"{spec.folder}: skipped rows with missing fields, as GLUE's {spec.folder.capitalize()}Processor does: "
            + "; ".join(parts))


# ---------------------------------------------------------------- SQuAD v1.1

def read_squad_file(path: str | Path) -> tuple[SquadExample, ...]:
    """Every question of a SQuAD v1.1 JSON file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"missing data file {path}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except json.JSONDecodeError as err:
        raise TaskError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise TaskError(f"{path}: not a SQuAD file (expected an object with a 'data' list of articles)")
    examples = []
    for a, article in enumerate(data["data"]):
        title = article.get("title", f"article-{a}")
        for p, para in enumerate(article.get("paragraphs", [])):
            try:
                context = para["context"]
                for qa in para["qas"]:
                    answers = tuple(ans["text"] for ans in qa["answers"])
                    starts = tuple(int(ans["answer_start"]) for ans in qa["answers"])
                    examples.append(SquadExample(str(qa["id"]), title, qa["question"], context, answers, starts))
            except (KeyError, TypeError) as err:
                raise TaskError(f"{path}: article {a} ({title!r}) paragraph {p}: missing or bad field {err}; "
                                "expected SQuAD v1.1 (context, qas[id, question, answers[text, answer_start]])") from None
    return tuple(examples)


def split_by_article(examples: tuple[SquadExample, ...], train_fraction: float, seed: int = 0
                     ) -> tuple[tuple[SquadExample, ...], tuple[SquadExample, ...], str]:
    """Deterministic train/eval split of a SQuAD file by article (no paragraph is on both sides)."""
    if not 0.0 < train_fraction < 1.0:
        raise TaskError(f"squad_article_split must be in (0, 1), got {train_fraction}")
    titles = list(dict.fromkeys(e.title for e in examples))  # file order, unique
    if len(titles) < 2:
        raise TaskError("cannot split by article: the file has fewer than 2 articles")
    order = np.random.default_rng(seed).permutation(len(titles))
    n_train = min(max(1, round(train_fraction * len(titles))), len(titles) - 1)
    train_titles = {titles[i] for i in order[:n_train]}
    train = tuple(e for e in examples if e.title in train_titles)
    held = tuple(e for e in examples if e.title not in train_titles)
    note = (f"SQuAD split by article (seed {seed}): {n_train} articles / {len(train)} questions for training, "
            f"{len(titles) - n_train} articles / {len(held)} questions for evaluation")
    return train, held, note


# ---------------------------------------------------------------- task folders

def task_folder(spec: TaskSpec, data_dir: str | Path) -> Path:
    """The folder holding `spec`'s files: DATA/<Folder>, DATA/glue/<Folder> (or DATA itself if it has the files)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TaskError(f"data folder {data_dir} does not exist")
    names = [spec.folder, spec.folder.lower(), spec.name, spec.folder.upper()]
    candidates = [data_dir / n for n in names] + [data_dir / "glue" / n for n in names] + [data_dir]
    for folder in candidates:
        if (folder / spec.dev_files[0][1]).is_file() or (folder / spec.train_file).is_file():
            return folder
    raise TaskError(f"no {spec.folder} files under {data_dir}: looked for {spec.dev_files[0][1]} / {spec.train_file} "
                    f"in {', '.join(str(c) for c in candidates[:2])} and the glue/ subfolder")


def is_hf(data_dir: str | Path) -> bool:
    """``"hf"`` (or ``"hf:..."``) selects the Hugging Face hub instead of a local folder."""
    return str(data_dir) == "hf" or str(data_dir).startswith("hf:")


@lru_cache(maxsize=32)
def _load_task_cached(name: str, data_dir: str, need_train: bool, squad_article_split: float | None,
                      split_seed: int, mtimes: tuple) -> TaskData:
    from .tasks import get_task

    spec = get_task(name)
    if is_hf(data_dir):
        from .hf_datasets import load_hf_task

        return load_hf_task(spec, need_train=need_train)
    folder = task_folder(spec, data_dir)
    if spec.kind == "span":
        if squad_article_split is not None:
            train, held, note = split_by_article(read_squad_file(folder / spec.dev_files[0][1]),
                                                 squad_article_split, split_seed)
            return TaskData(spec.name, train, {"dev": held}, str(folder), note)
        train = read_squad_file(folder / spec.train_file) if need_train else ()
        return TaskData(spec.name, train, {"dev": read_squad_file(folder / spec.dev_files[0][1])}, str(folder))
    files = {split: read_glue_rows(spec, folder / file, split) for split, file in spec.dev_files}
    if need_train:
        files = {"train": read_glue_rows(spec, folder / spec.train_file, "train"), **files}
    train = files["train"].examples if need_train else ()
    dev = {split: files[split].examples for split, _ in spec.dev_files}
    return TaskData(spec.name, train, dev, str(folder), skipped_note(spec, files),
                    {split: len(f.skipped_lines) for split, f in files.items() if f.skipped_lines})


def load_task(spec: TaskSpec, data_dir: str | Path, need_train: bool = True,
              squad_article_split: float | None = None, split_seed: int = 0) -> TaskData:
    """Read `spec`'s training and dev examples from `data_dir` (GLUE/SQuAD layout, or ``"hf"`` for HF datasets).

    For SQuAD, `squad_article_split` (e.g. 0.8) trains on that share of the dev file's articles and evaluates on the
    rest, for machines without ``train-v1.1.json``; `TaskData.note` says so. Results are cached per file version.
    """
    data_dir = str(data_dir)
    if spec.kind != "span" and squad_article_split is not None:
        squad_article_split = None  # only meaningful for SQuAD; keeps the cache key small
    mtimes: tuple = ()
    if not is_hf(data_dir):
        try:
            folder = task_folder(spec, data_dir)
            mtimes = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
        except TaskError:
            pass  # reported by the loader below with the same message
    return _load_task_cached(spec.name, data_dir, need_train, squad_article_split, split_seed, mtimes)
