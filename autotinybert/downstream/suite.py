"""Run several tasks on one model and aggregate them like the paper: GLUE "score" and "avg" (with SQuAD).

The paper's GLUE score averages 8 tasks: WNLI is reported in its column but left out of both aggregates (its dev
set is adversarial to its train set, and BERT's paper left it out for that reason).

Each task writes OUT/<task>/ (see `finetune`); a task whose OUT/<task>/result.json already exists is read back
instead of re-run, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import FinetuneConfig
from .data import load_task
from .tasks import TaskSpec, parse_tasks

# The paper's column order (Tables 1 and 2).
PAPER_ORDER = ("squad", "sst2", "mnli", "mrpc", "cola", "qnli", "qqp", "stsb", "rte", "wnli")
COLUMN = {"squad": "SQuAD", "sst2": "SST-2", "mnli": "MNLI", "mrpc": "MRPC", "cola": "CoLA", "qnli": "QNLI",
          "qqp": "QQP", "stsb": "STS-B", "rte": "RTE", "wnli": "WNLI"}
NOT_AVERAGED = frozenset({"wnli"})  # reported, never in "score" or "avg" (the paper's tables)


@dataclass
class TaskScore:
    task: str
    main_metric: str
    best: float             # best dev score seen during fine-tuning (the paper's convention)
    final: float            # dev score after the last step
    best_metrics: dict[str, float]
    final_metrics: dict[str, float]
    wall_s: float
    resumed: bool = False   # read back from an earlier run's result.json
    note: str = ""


@dataclass
class SuiteResult:
    """Scores per task and the paper's aggregates (fractions): `score` = mean over the GLUE tasks but WNLI, `avg` =
    the same plus SQuAD."""

    model: str
    tasks: dict[str, TaskScore]
    score: float | None            # GLUE mean of best scores (None when no GLUE task ran)
    avg: float | None              # mean of best scores over every task run, SQuAD included
    final_score: float | None      # the same with final scores
    final_avg: float | None
    wall_s: float
    out_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table_row(self, which: str = "best") -> dict[str, str]:
        """One row shaped like the paper's tables (x100, one decimal), in the paper's column order."""
        row = {"model": self.model}
        for name in PAPER_ORDER:
            if name in self.tasks:
                row[COLUMN[name]] = f"{100 * getattr(self.tasks[name], which):.1f}"
        agg = (self.score, self.avg) if which == "best" else (self.final_score, self.final_avg)
        row["Score"] = "-" if agg[0] is None else f"{100 * agg[0]:.1f}"
        row["Avg"] = "-" if agg[1] is None else f"{100 * agg[1]:.1f}"
        return row


def aggregate(scores: dict[str, float]) -> tuple[float | None, float | None]:
    """(score, avg): the mean over the GLUE tasks (custom tasks count as GLUE-like) and the mean over every task
    including SQuAD -- both without WNLI, as the paper's 8-task GLUE score."""
    kept = {k: v for k, v in scores.items() if k not in NOT_AVERAGED}
    glue = [v for k, v in kept.items() if k != "squad"]
    score = sum(glue) / len(glue) if glue else None
    avg = sum(kept.values()) / len(kept) if kept else None
    return score, avg


def headline_score(scores: dict[str, float]) -> float | None:
    """The one number of a suite: the GLUE score (WNLI left out) when a GLUE task ran, else the mean over every task
    (SQuAD alone)."""
    score, avg = aggregate(scores)
    return score if score is not None else avg


def _task_score(spec: TaskSpec, result: dict[str, Any], resumed: bool) -> TaskScore:
    return TaskScore(spec.name, result["main_metric"], result["best_score"], result["final_score"],
                     result["best_metrics"], result["final_metrics"], result["wall_s"], resumed,
                     result.get("data", {}).get("note", ""))


def task_settings(specs: list[TaskSpec], config: FinetuneConfig | dict | str | Path | None,
                  task_configs: dict[str, dict[str, Any]] | None) -> dict[str, FinetuneConfig]:
    """Each task's `FinetuneConfig`: `config` with that task's `task_configs` keys on top."""
    base = FinetuneConfig.load(config)
    task_configs = {k.lower(): v for k, v in (task_configs or {}).items()}
    unknown = sorted(set(task_configs) - {s.name for s in specs})
    if unknown:
        raise UserError(f"task_configs names task(s) {unknown} that are not in this suite ({[s.name for s in specs]})")
    return {s.name: base.replace(**task_configs.get(s.name, {})) for s in specs}


def evaluate_suite(model_dir: str | Path, tasks, data_dir: str | Path, out_dir: str | Path | None = None,
                   config: FinetuneConfig | dict | str | Path | None = None, *,
                   task_configs: dict[str, dict[str, Any]] | None = None, resume: bool = True,
                   overwrite: bool = False) -> SuiteResult:
    """Fine-tune and score `model_dir` on every task in `tasks` (``"sst2,mrpc"``, a list, or ``"glue"``).

    `config` applies to every task (unset task settings take Table D.1's values); `task_configs` overrides per task
    (``{"sst2": {"max_train_examples": 8000}}``). All data files and settings are checked before any training.
    Writes OUT/<task>/... and OUT/suite.json.
    """
    from ..io import atomic_write_json
    from .train import finetune

    started = time.time()
    specs = parse_tasks(tasks)
    configs = task_settings(specs, config, task_configs)
    # Read every task's data now, so a missing file fails before hours of training.
    datas = {s.name: load_task(s, data_dir, squad_article_split=configs[s.name].squad_article_split,
                               split_seed=configs[s.name].split_seed) for s in specs}
    if not (Path(model_dir) / "config.json").is_file():
        raise UserError(f"model folder {model_dir} has no config.json")
    out = Path(out_dir) if out_dir is not None else None
    results: dict[str, TaskScore] = {}
    for spec in specs:
        task_out = out / spec.name if out is not None else None
        done = task_out / "result.json" if task_out is not None else None
        if resume and not overwrite and done is not None and done.is_file():
            results[spec.name] = _task_score(spec, json.loads(done.read_text()), resumed=True)
            continue
        r = finetune(model_dir, spec, data_dir, task_out, configs[spec.name], overwrite=overwrite or resume,
                     data=datas[spec.name])
        results[spec.name] = _task_score(spec, r.to_dict(), resumed=False)
    score, avg = aggregate({k: v.best for k, v in results.items()})
    final_score, final_avg = aggregate({k: v.final for k, v in results.items()})
    suite = SuiteResult(str(model_dir), results, score, avg, final_score, final_avg,
                        round(time.time() - started, 2), str(out) if out is not None else None)
    if out is not None:
        atomic_write_json(out / "suite.json", suite.to_dict())
    return suite


# ----- several fine-tunes at once ------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskJob:
    """One fine-tune: `model_dir` on `spec`, written to `out_dir` (OUT/<task>/ of a suite), with `config`. The task
    travels as its spec, so a task registered in this process (`register_task`) runs in a worker too."""

    model_dir: str
    spec: TaskSpec
    data_dir: str
    out_dir: str
    config: FinetuneConfig

    @property
    def task(self) -> str:
        return self.spec.name

    @property
    def finished(self) -> bool:
        return (Path(self.out_dir) / "result.json").is_file()


def suite_jobs(model_dir: str | Path, tasks, data_dir: str | Path, out_dir: str | Path,
               config: FinetuneConfig | dict | str | Path | None = None, *,
               task_configs: dict[str, dict[str, Any]] | None = None) -> list[TaskJob]:
    """The fine-tunes `evaluate_suite` with the same arguments would run, one job per task."""
    specs = parse_tasks(tasks)
    configs = task_settings(specs, config, task_configs)
    return [TaskJob(str(model_dir), s, str(data_dir), str(Path(out_dir) / s.name), configs[s.name]) for s in specs]


def run_jobs(jobs: list[TaskJob], workers: int, log=print) -> None:
    """Run the unfinished `jobs`, `workers` at a time in spawned processes (each at its config's `threads`).

    A finished job (its result.json exists) is skipped, a half-done one restarted, so a killed run resumes; the
    results are those of running the jobs one after another (each fine-tune is seeded by its own config). Every
    job's data is loaded once here first, so a missing file fails before any training. With ``workers=1`` the jobs
    run in this process. `evaluate_suite` then reads the results back.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserError(f"workers must be an integer >= 1, got {workers!r}")
    pending = [job for job in jobs if not job.finished]
    reads = {(job.task, job.data_dir, job.config.squad_article_split, job.config.split_seed): job.spec
             for job in pending}
    for (_, data_dir, article_split, split_seed), spec in reads.items():
        load_task(spec, data_dir, squad_article_split=article_split, split_seed=split_seed)
    if workers == 1 or len(pending) <= 1:
        for job in pending:
            _run_job(job)
        return
    with ProcessPoolExecutor(min(workers, len(pending)), mp_context=get_context("spawn")) as pool:
        # progress bars from several processes would interleave: one line per finished job instead
        running = {pool.submit(_run_job, replace(job, config=job.config.replace(progress=False))): job
                   for job in pending}
        done_count = 0
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                future.result()  # a failed fine-tune stops the stage with its own error
                done_count += 1
                log(f"[finetune] {done_count}/{len(pending)} done: {job.task} in {job.out_dir}")


def _run_job(job: TaskJob) -> None:
    """One fine-tune (also the worker processes' entry point)."""
    from .tasks import CUSTOM_TASKS, TASKS, register_task
    from .train import finetune

    if job.task not in TASKS and job.task not in CUSTOM_TASKS:  # a spawned worker: the parent's registered task
        register_task(job.spec)
    finetune(job.model_dir, job.spec, job.data_dir, job.out_dir, job.config, overwrite=True)
