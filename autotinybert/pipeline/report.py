"""`RUN_DIR/report.md` with PNG plots (matplotlib, Agg): speedup vs score for every fine-tuned model (the paper's
Figure 1), per target the searched model against its two conventional baselines (training budgets, latency gaps,
score gaps judged by the fine-tuning seeds' spread), the top k candidates, search progress and the latency
predictor's fit. Everything is read back from the stages' files, so `autotinybert report` rebuilds it."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_text
from ..search.records import read_records

REPORT_FILE = "report.md"
PLOTS_DIR = "report"
BASELINES = ("conventional-scratch", "conventional-inherited")
SCORE_RULE = ("Score: the mean over the GLUE tasks run of the final-epoch dev score (x100), WNLI left out as in the "
              "paper's 8-task GLUE score (WNLI is still reported in its own column; SQuAD enters only the paper's "
              "avg); with no GLUE task, the mean over the tasks run.")


def _done_outputs(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """A finished stage's outputs, its paths resolved against the run folder where it is now (None: not done)."""
    from .stages import read_done

    done = read_done(run_dir, stage)
    return done.get("outputs") or {} if done is not None else None


def collect_models(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every model of the run, from the latest finished stage: finetune (with scores), else further-train and
    baselines, else extract."""
    run_dir = Path(run_dir)
    fine = _done_outputs(run_dir, "finetune")
    if fine is not None:
        return fine["models"]
    trained = _done_outputs(run_dir, "further-train")
    if trained is not None:
        return trained["models"] + (_done_outputs(run_dir, "baselines") or {"models": []})["models"]
    ext = _done_outputs(run_dir, "extract")
    if ext is None:
        raise UserError(f"{run_dir} holds no finished extract stage; run `autotinybert run` first")
    return ext["models"]


def _reference_ms(run_dir: Path) -> float:
    return json.loads((run_dir / "extract" / "models.json").read_text())["reference_ms"]


def _speedup_over(run_dir: Path) -> str:
    """What the run's targets are faster than: bert-base or init (its pipeline.json's search.speedup_over)."""
    try:
        return json.loads((run_dir / "pipeline.json").read_text())["search"].get("speedup_over", "bert-base")
    except (OSError, ValueError, KeyError, TypeError):
        return "bert-base"


def target_speedup(m: dict[str, Any], over: str) -> float | None:
    """The model's measured speedup in its target's unit (over BERT-base, or over the init_from checkpoint)."""
    return m.get("measured_speedup_init") if over == "init" else m.get("measured_speedup")


def init_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per target, what the searched model keeps of the init_from checkpoint's score, and how much faster it is
    (both measured in this run); nothing without init_from."""
    init = next((m for m in models if m["kind"] == "init"), None)
    if init is None or not init.get("score"):
        return []
    lines = []
    for m in sorted((m for m in models if m["kind"] in ("searched", "fast", *BASELINES) and m.get("score") is not None),
                    key=lambda m: (m["speedup_target"], ROW_ORDER[m["kind"]])):
        lines.append(f"- {m['name']} `{m['arch']}`: {100 * m['score']:.1f} = {100 * m['score'] / init['score']:.1f} % "
                     f"of the init model's {100 * init['score']:.1f}, "
                     f"{m['measured_speedup_init']:.2f}x faster than it ({m['measured_speedup']:.1f}x faster than "
                     "BERT-base)")
    return lines


def _training(m: dict[str, Any]) -> dict[str, Any]:
    """The model's own training run as it recorded itself: total steps and warm-up share."""
    run = Path(m["trained_dir"]) / "train_config.json" if m.get("trained_dir") else None
    if run is None or not run.is_file():
        return {}
    config = json.loads(run.read_text())
    return {"steps": m.get("train_steps") or config.get("total_steps"), "warmup_ratio": config.get("warmup_ratio"),
            "objective": config.get("objective"), "kd_attention": config.get("kd_attention")}


def budget_text(m: dict[str, Any]) -> str:
    """'120 supernet + 20 further = 140 steps' / '140 steps from scratch (warm-up 10 %)'."""
    own = m.get("train_steps")
    if own is None:
        return "-"
    inherited = m.get("inherited_steps", 0)
    warmup = _training(m).get("warmup_ratio")
    tail = f" (warm-up {100 * warmup:g} %)" if warmup else ""
    if not inherited:
        return f"{own:,} steps from scratch{tail}"
    return f"{inherited:,} supernet + {own:,} further = {inherited + own:,} steps{tail}"


def _pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.1f} %"


def _seed_spread(m: dict[str, Any]) -> tuple[int, float | None]:
    scores = [s for s in m.get("seed_scores", []) if s is not None]
    return len(scores), (statistics.stdev(scores) if len(scores) > 1 else None)


def gap_verdict(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Is a's score gap over b real, by the fine-tuning seeds' spread (~95 %: |gap| > 2 SE of the difference of two
    means)?"""
    (na, sa), (nb, sb) = _seed_spread(a), _seed_spread(b)
    if sa is None or sb is None:
        return ("one fine-tuning seed: no seed spread to judge this gap by (set finetune.seeds >= 2); see the "
                "dev-set noise below")
    se = 100 * math.sqrt(sa ** 2 / na + sb ** 2 / nb)
    diff = 100 * (a["score"] - b["score"])
    real = abs(diff) > 2 * se
    return (f"seed spread: SE of the gap {se:.2f} points over {na} and {nb} seeds, so "
            + (f"{diff:+.1f} is beyond 2 SE: real" if real else f"{diff:+.1f} is within 2 SE ({2 * se:.1f}): "
               "not shown to be real"))


def comparison_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per target: the searched model (and the fast-rule pick) against each conventional baseline -- score
    difference in points, the baseline's measured latency gap in percent, and whether the gap is real by the
    fine-tuning seeds' spread (the paper's claim: a better score at equal latency)."""
    lines = []
    for target in sorted({m["speedup_target"] for m in models}):
        group = [m for m in models if m["speedup_target"] == target]
        for kind in ("searched", "fast"):
            m = next((g for g in group if g["kind"] == kind), None)
            if m is None or m.get("score") is None:
                continue
            for base_kind in BASELINES:
                base = next((g for g in group if g["kind"] == base_kind), None)
                if base is None or base.get("score") is None:
                    continue
                diff = 100 * (m["score"] - base["score"])
                lines.append(f"- {target:g}x: {kind} `{m['arch']}` {100 * m['score']:.1f} vs {base_kind} "
                             f"`{base['arch']}` {100 * base['score']:.1f} ({diff:+.1f} points); latency gap "
                             f"{_pct(base['measured_ms'], m['measured_ms'])} (baseline {base['measured_ms']:.2f} ms "
                             f"vs {m['measured_ms']:.2f} ms, timed in one run); {gap_verdict(m, base)}")
    return lines


def budget_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per target, the training each compared model got (read from the training runs themselves)."""
    lines = []
    for target in sorted({m["speedup_target"] for m in models}):
        for m in models:
            if m["speedup_target"] == target and m["kind"] in ("searched", *BASELINES):
                lines.append(f"- {target:g}x {m['kind']} `{m['arch']}`: {budget_text(m)}"
                             + (f" (the same run as {m['same_as']})" if m.get("same_as") else ""))
    return lines


def candidate_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per target, every further-trained candidate of the search: its one-shot fitness, its evaluator score after
    further training, and which one became the searched model."""
    lines = []
    for target in sorted({m["speedup_target"] for m in models}):
        cands = sorted((m for m in models if m["speedup_target"] == target and m["kind"] in ("candidate", "searched")),
                       key=lambda m: m.get("search_rank") or 0)
        if not cands:
            continue
        lines.append(f"- {target:g}x: " + "; ".join(
            f"rank {m.get('search_rank')} `{m['arch']}` (one-shot fitness "
            + (f"{m['search_fitness']:.4g}" if m.get("search_fitness") is not None else "-")
            + (f", after further training {m['selection_fitness']:.4g}" if m.get("selection_fitness") is not None
               else "") + ")" + (" **chosen**" if m["kind"] == "searched" else "") for m in cands))
    return lines


def _task_result(m: dict[str, Any], task: str) -> dict[str, Any] | None:
    folder = m.get("finetuned_dirs", {}).get(task)
    result = Path(folder).parent / "result.json" if folder else None
    return json.loads(result.read_text()) if result is not None and result.is_file() else None


def noise_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per task: how many dev examples scored the models and, for accuracy, the binomial standard error of one score
    and the rough 95 % threshold for a difference of two (2 x sqrt(2) x SE) -- dev-set noise, beside the seeds'."""
    lines = []
    for task in sorted({t for m in models for t in m.get("finetuned_dirs", {})}):
        result = next((r for r in (_task_result(m, task) for m in models) if r is not None), None)
        if result is None:
            continue
        counts = result.get("eval_examples")
        n = sum(counts.values()) if isinstance(counts, dict) else counts
        if not n:
            continue
        line = f"- {task}: {n:,} dev examples ({result.get('main_metric')})"
        scores = [m["scores"][task] for m in models if task in m.get("scores", {})]
        if result.get("main_metric") == "accuracy" and scores:
            p = sum(scores) / len(scores)
            se = 100 * (p * (1 - p) / n) ** 0.5
            line += (f"; one accuracy near {100 * p:.1f} % has a standard error of {se:.1f} points, so a gap "
                     f"between two models under ~{2 * 2 ** 0.5 * se:.1f} points is within noise")
        lines.append(line)
    return lines


def data_note_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per task, what the data readers noted (e.g. QQP rows skipped for missing fields, the SQuAD article split)."""
    notes = {}
    for m in models:
        for task, stats in m.get("tasks", {}).items():
            if stats.get("note"):
                notes.setdefault(task, stats["note"])
    return [f"- {task}: {note}" for task, note in sorted(notes.items())]


def _cell(m: dict[str, Any], task: str) -> str:
    stats = m.get("tasks", {}).get(task)
    if stats is None:
        return f"{100 * m['scores'][task]:.1f}" if task in m.get("scores", {}) else "-"
    spread = f"±{100 * stats['final_std']:.1f}" if stats.get("final_std") is not None else ""
    return f"{100 * stats['final_mean']:.1f}{spread} ({100 * stats['best_mean']:.1f})"


def _gap(m: dict[str, Any], models: list[dict[str, Any]]) -> str:
    searched = next((s for s in models if s["kind"] == "searched" and s["speedup_target"] == m["speedup_target"]),
                    None)
    if searched is None or m.get("measured_ms") is None or m is searched:
        return "-"
    return _pct(m["measured_ms"], searched["measured_ms"])


ROW_ORDER = {"init": -1, "searched": 0, "fast": 1, "conventional-inherited": 2, "conventional-scratch": 3}


def _rows(models: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The init_from checkpoint (when set), then per target (in order): the searched model, the fast pick, then the
    two baselines."""
    shown = sorted((m for m in models if m["kind"] != "candidate"),
                   key=lambda m: (m["kind"] != "init", m["speedup_target"], ROW_ORDER[m["kind"]]))
    tasks = sorted({t for m in shown for t in m.get("scores", {})})
    has_init = any(m.get("measured_speedup_init") is not None for m in shown)
    head = ["model", "arch", "pred ms", "meas ms", "speedup", *(["vs init"] if has_init else []), "lat vs searched",
            "steps"] + tasks + ["score", "(best)"]
    rows = []
    for m in shown:
        steps = "-" if m.get("train_steps") is None else (
            f"{m.get('inherited_steps', 0)}+{m['train_steps']}" if m.get("inherited_steps") else f"{m['train_steps']}")
        rows.append([m["name"], m["arch"], f"{m['predicted_ms']:.2f}",
                     f"{m['measured_ms']:.2f}" if m.get("measured_ms") is not None else "-",
                     f"{m['measured_speedup']:.1f}x" if m.get("measured_speedup") is not None else "-",
                     *([f"{m['measured_speedup_init']:.2f}x" if m.get("measured_speedup_init") is not None else "-"]
                       if has_init else []),
                     _gap(m, models), steps]
                    + [_cell(m, t) for t in tasks]
                    + [f"{100 * m['score']:.1f}" if m.get("score") is not None else "-",
                       f"{100 * m['best_score']:.1f}" if m.get("best_score") is not None else "-"])
    return head, rows


def final_table(run_dir: str | Path) -> str:
    """A plain-text table: per target the searched model, the fast pick and the two baselines. Task cells: final-
    epoch dev score (mean ± std over the seeds) and, in parentheses, the best dev score seen."""
    head, rows = _rows(collect_models(run_dir))
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


SPEEDUP_TOLERANCE = 0.2  # a measured speedup this far (relative) from its target is flagged
MAJORITY_MARGIN = 0.01  # an accuracy within 1 point of the majority-class rate (or below it) is flagged


def _majority_rates(run_dir: Path, tasks: set[str]) -> dict[str, float]:
    """Task -> the share of its dev set's most frequent label (classification tasks whose data can be read)."""
    from collections import Counter

    from ..downstream.data import load_task
    from ..downstream.tasks import get_task

    try:
        downstream = json.loads((run_dir / "pipeline.json").read_text())["data"]["downstream"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    rates = {}
    for task in sorted(tasks):
        try:
            spec = get_task(task)
            if spec.kind != "classification":
                continue
            labels = [ex.label for split in load_task(spec, downstream, need_train=False).dev.values() for ex in split]
        except (UserError, OSError, ValueError, KeyError):
            continue  # the data moved or is gone: no flag rather than a failed report
        if labels:
            rates[task] = Counter(labels).most_common(1)[0][1] / len(labels)
    return rates


def flag_lines(run_dir: str | Path, models: list[dict[str, Any]]) -> list[str]:
    """Warnings a reader must not miss: a model whose accuracy sits at the majority-class rate of the dev set (it
    predicts one class: nothing learned), and a measured speedup 20 % or more off its target (the predictor does
    not match this machine now: refit it, or re-measure)."""
    lines = []
    over = _speedup_over(Path(run_dir))
    for m in models:
        target, measured = m.get("speedup_target"), target_speedup(m, over)
        if m.get("kind") != "init" and target and measured and abs(measured / target - 1) >= SPEEDUP_TOLERANCE:
            off = 100 * (measured / target - 1)
            lines.append(f"- WARNING {m['name']}: measured speedup {measured:.1f}x is {abs(off):.0f} % "
                         f"{'above' if off > 0 else 'below'} its {target:g}x target: the latency predictor does not "
                         "match this machine's timings now (busy machine, other settings); re-measure, or refit "
                         "the predictor")
    tasks = {t for m in models for t in (m.get("scores") or {})}
    rates = _majority_rates(Path(run_dir), tasks) if tasks else {}
    for m in models:
        for task, score in sorted((m.get("scores") or {}).items()):
            rate = rates.get(task)
            if rate is not None and score is not None and score <= rate + MAJORITY_MARGIN:
                lines.append(f"- WARNING {m['name']} on {task}: {100 * score:.1f} is the majority-class rate of the "
                             f"dev set ({100 * rate:.1f} %): the model predicts (nearly) one class, so its score "
                             "says nothing about the architecture; train longer or fine-tune with more data")
    return lines


def summary_text(run_dir: str | Path) -> str:
    """What a finished run prints: the final table, then the per-target comparison and per-task noise lines."""
    models = collect_models(run_dir)
    return "\n".join([final_table(run_dir), "", SCORE_RULE, *comparison_lines(models), *init_lines(models),
                      *noise_lines(models), *data_note_lines(models), *flag_lines(run_dir, models)])


def _save_plot(fig, ax, path: Path, title: str, xlabel: str, ylabel: str) -> None:
    """Label, lay out, write and close one report figure."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.md and RUN_DIR/report/*.png; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    models = collect_models(run_dir)
    plots = run_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    lines = [f"# AutoTinyBERT pipeline report: `{run_dir.name}`", ""]
    seeds = max((len(s.get("seeds", [])) for m in models for s in m.get("tasks", {}).values()), default=0)
    lines += [f"BERT-base latency on this machine (measured in the same run): {_reference_ms(run_dir):.1f} ms. "
              "Speedups are measured (BERT-base / model). Task scores (x100): the final-epoch dev score, mean over "
              f"{seeds} fine-tuning seed{'s' if seeds != 1 else ''}" + (" ± its sample standard deviation" if seeds > 1
                                                                          else "")
              + ", and in parentheses the best dev score seen during fine-tuning (the paper's convention).", "",
              SCORE_RULE, ""]
    init = next((m for m in models if m["kind"] == "init"), None)
    if init is not None:
        lines += [f"The init_from checkpoint `{init['arch']}` ({init['extracted_dir']}) measured {init['measured_ms']:.2f} ms "
                  f"in the same run ({init['measured_speedup']:.1f}x faster than BERT-base); it is fine-tuned like every "
                  "other model as the reference row `init`, and the `vs init` column is its latency / the model's. "
                  f"Targets are speedups over {_speedup_over(run_dir)}.", ""]

    # speedup vs score (Figure 1)
    scored = [m for m in models if m.get("score") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, marker in (("init", "*"), ("searched", "o"), ("fast", "^"), ("conventional-scratch", "s"),
                             ("conventional-inherited", "D")):
            pts = [m for m in scored if m["kind"] == kind]
            if not pts:
                continue
            ax.scatter([m["measured_speedup"] for m in pts], [100 * m["score"] for m in pts], marker=marker,
                       label=kind)
            for m in pts:
                ax.annotate(m["arch"], (m["measured_speedup"], 100 * m["score"]), fontsize=7)
        _save_plot(fig, ax, plots / "speedup_vs_score.png", "speedup vs score",
                   "measured speedup over BERT-base", "score (dev, final epoch)")
        lines += ["## Speedup vs score", "", f"![speedup vs score]({PLOTS_DIR}/speedup_vs_score.png)", ""]

    flags = flag_lines(run_dir, models)
    if flags:
        lines += ["## Warnings", ""] + flags + [""]

    # per-target comparison
    lines += ["## Searched vs conventional, per target", "",
              "Two baselines per target, both the conventional arch (BERT's rule: ffn ~ 4 hidden, qkv ~ hidden, each "
              "the nearest value on the space's grid) whose latency, timed in the same interleaved run as the "
              "searched model, is closest to the searched model's: `conventional-scratch` is trained from scratch "
              "for the searched model's whole budget (supernet steps + its further-training steps) with its own "
              "warm-up, as the paper's BERT-S* baselines; `conventional-inherited` is extracted from the same "
              "supernet and further-trained exactly like the searched model, which isolates the architecture.", ""]
    compared = comparison_lines(models)
    if compared:
        lines += compared + [""]
    kept = init_lines(models)
    if kept:
        lines += ["Against the init_from checkpoint (score kept, measured speedup):", ""] + kept + [""]
    budgets = budget_lines(models)
    if budgets:
        lines += ["Training budgets (optimizer steps, read from each run):", ""] + budgets + [""]
    candidates = candidate_lines(models)
    if candidates:
        lines += ["Top-k further-trained candidates per target (the one with the best evaluator score after further "
                  "training is the searched model):", ""] + candidates + [""]
    noise = noise_lines(models)
    if noise:
        lines += ["Dev-set noise per task:", ""] + noise + [""]
    notes = data_note_lines(models)
    if notes:
        lines += ["Data notes:", ""] + notes + [""]
    lines += ["```", final_table(run_dir), "```", ""]
    head, rows = _rows(models)
    targets = {m["name"]: m["speedup_target"] for m in models}
    lines += ["| target | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for row in rows:
        target = "init" if row[0] == "init" else f"{targets[row[0]]:g}x"
        lines.append(f"| {target} | " + " | ".join(row) + " |")
    lines.append("")

    # search progress
    searches = sorted(p for p in run_dir.glob("search-*/search/candidates.jsonl"))
    if searches:
        fig, ax = plt.subplots(figsize=(6, 4))
        for path in searches:
            best_by_gen: dict[int, float] = {}
            for r in read_records(path):
                if r.fitness is not None:
                    best_by_gen[r.generation] = max(best_by_gen.get(r.generation, float("-inf")), r.fitness)
            gens = sorted(best_by_gen)
            running = [max(best_by_gen[g] for g in gens[:i + 1]) for i in range(len(gens))]
            ax.plot(gens, running, marker="o", label=path.parent.parent.name)
        _save_plot(fig, ax, plots / "search_progress.png", "search progress", "generation", "best fitness so far")
        lines += ["## Search progress", "", f"![search progress]({PLOTS_DIR}/search_progress.png)", ""]

    # predictor fit
    fit_file = run_dir / "predictor" / "fit.json"
    if fit_file.is_file():
        fit = json.loads(fit_file.read_text())
        pts = fit["points"]
        fig, ax = plt.subplots(figsize=(5, 5))
        for role, marker in (("sampled", "o"), ("conventional", "s"), ("init", "*")):
            sel = [p for p in pts if p["role"] == role]
            ax.scatter([p["measured_ms"] for p in sel], [p["predicted_ms"] for p in sel], marker=marker, label=role)
        lo = min(min(p["measured_ms"], p["predicted_ms"]) for p in pts)
        hi = max(max(p["measured_ms"], p["predicted_ms"]) for p in pts)
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1)
        _save_plot(fig, ax, plots / "predictor_fit.png", "latency predictor fit (in-sample)", "measured ms",
                   "predicted ms")
        lines += ["## Latency predictor", ""]
        report = fit.get("report") or {}
        if report:
            lines.append(f"Chosen model: `{report.get('chosen')}`, {report.get('n_points')} points, "
                         f"{report.get('folds')}-fold cross-validation:")
            lines.append("")
            for kind, metrics in report.get("cross_validation", {}).items():
                lines.append(f"- {kind}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in metrics.items()))
            lines.append("")
        lines += [f"![predictor fit]({PLOTS_DIR}/predictor_fit.png)", ""]

    # stage timings
    lines += ["## Stages", "", "| stage | wall s |", "|---|---|"]
    for marker in sorted(run_dir.glob("*/DONE.json"), key=lambda p: json.loads(p.read_text()).get("finished", 0)):
        done = json.loads(marker.read_text())
        if done["stage"] == "report":  # not its own timing: a rebuilt report reads the same as the stage's
            continue
        lines.append(f"| {done['stage']} | {done['wall_s']:.1f} |")
    lines.append("")
    out = run_dir / REPORT_FILE
    atomic_write_text(out, "\n".join(lines))
    return out
