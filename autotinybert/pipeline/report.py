"""`RUN_DIR/report.md` with PNG plots (matplotlib, Agg): speedup vs score for every evaluated model (the paper's
Figure 1), the per-target table (searched against conventional at equal latency), search progress and the
latency predictor's fit. Everything is read back from the stages' files, so `autotinybert report` rebuilds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..io import atomic_write_text
from ..search.records import read_records

REPORT_FILE = "report.md"
PLOTS_DIR = "report"


def _done_outputs(run_dir: Path, stage: str) -> dict[str, Any] | None:
    marker = run_dir / stage / "DONE.json"
    return json.loads(marker.read_text()).get("outputs", {}) if marker.is_file() else None


def collect_models(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every extracted model with its latencies, and its scores once the finetune stage is done."""
    run_dir = Path(run_dir)
    ext = _done_outputs(run_dir, "extract")
    if ext is None:
        raise UserError(f"{run_dir} holds no finished extract stage; run `autotinybert run` first")
    fine = {m["name"]: m for m in (_done_outputs(run_dir, "finetune") or {}).get("models", [])}
    return [{**m, **{k: fine[m["name"]][k] for k in ("scores", "score", "finetuned_dirs")}} if m["name"] in fine
            else dict(m) for m in ext["models"]]


def comparison_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per target: the searched model (and the fast-rule pick) against the conventional baseline -- score
    difference in points and measured latency ratio (the paper's claim: better score at equal latency)."""
    lines = []
    for target in sorted({m["speedup_target"] for m in models}):
        group = {m["kind"]: m for m in models if m["speedup_target"] == target}
        base = group.get("conventional")
        if base is None or base.get("score") is None:
            continue
        for kind in ("searched", "fast"):
            m = group.get(kind)
            if m is None or m.get("score") is None:
                continue
            diff = 100 * (m["score"] - base["score"])
            ratio = m["measured_ms"] / base["measured_ms"]
            lines.append(f"- {target:g}x: {kind} `{m['arch']}` scores {100 * m['score']:.1f} vs conventional "
                         f"`{base['arch']}` {100 * base['score']:.1f} ({diff:+.1f} points) at {ratio:.2f}x its "
                         f"measured latency ({m['measured_ms']:.2f} vs {base['measured_ms']:.2f} ms)")
    return lines


def noise_lines(models: list[dict[str, Any]]) -> list[str]:
    """Per task: how many dev examples scored the models and, for accuracy, the binomial standard error of one score
    and the rough 95 % threshold for a difference of two (2 x sqrt(2) x SE) -- how large a gap means something."""
    lines = []
    for task in sorted({t for m in models for t in m.get("finetuned_dirs", {})}):
        results = [Path(m["finetuned_dirs"][task]).parent / "result.json" for m in models
                   if task in m.get("finetuned_dirs", {})]
        result = next((json.loads(r.read_text()) for r in results if r.is_file()), None)
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


def final_table(run_dir: str | Path) -> str:
    """A plain-text table: one row per model, searched and conventional side by side per target."""
    models = collect_models(run_dir)
    tasks = sorted({t for m in models for t in m.get("scores", {})})
    head = ["model", "arch", "pred ms", "meas ms", "speedup"] + tasks + ["score"]
    rows = []
    for m in models:
        scores = m.get("scores", {})
        rows.append([m["name"], m["arch"], f"{m['predicted_ms']:.2f}", f"{m['measured_ms']:.2f}",
                     f"{m['measured_speedup']:.1f}x"]
                    + [f"{100 * scores[t]:.1f}" if t in scores else "-" for t in tasks]
                    + [f"{100 * m['score']:.1f}" if m.get("score") is not None else "-"])
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary_text(run_dir: str | Path) -> str:
    """What a finished run prints: the final table, then the per-target comparison and per-task noise lines."""
    models = collect_models(run_dir)
    return "\n".join([final_table(run_dir), "", *comparison_lines(models), *noise_lines(models)])


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
    reference = json.loads((run_dir / "extract" / "models.json").read_text())["reference_ms"]
    lines += [f"BERT-base latency on this machine (measured in the same run): {reference:.1f} ms. "
              "Speedups are measured (BERT-base / model); scores are best dev scores x100.", ""]

    # speedup vs score (Figure 1)
    scored = [m for m in models if m.get("score") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, marker in (("searched", "o"), ("fast", "^"), ("conventional", "s")):
            pts = [m for m in scored if m["kind"] == kind]
            if not pts:
                continue
            ax.scatter([m["measured_speedup"] for m in pts], [100 * m["score"] for m in pts], marker=marker,
                       label=kind)
            for m in pts:
                ax.annotate(m["arch"], (m["measured_speedup"], 100 * m["score"]), fontsize=7)
        _save_plot(fig, ax, plots / "speedup_vs_score.png", "speedup vs score",
                   "measured speedup over BERT-base", "score (dev)")
        lines += ["## Speedup vs score", "", f"![speedup vs score]({PLOTS_DIR}/speedup_vs_score.png)", ""]

    # per-target table
    lines += ["## Searched vs conventional, per target", ""]
    compared = comparison_lines(models)
    if compared:
        lines += compared + ["", "The conventional baseline follows BERT's rule (ffn = 4 hidden, qkv = hidden) and "
                             "is the one whose measured latency is closest to the target; it is trained from "
                             "scratch with the same further-training budget the searched model gets.", ""]
    noise = noise_lines(models)
    if noise:
        lines += ["How much a difference means:", ""] + noise + [""]
    lines += ["```", final_table(run_dir), "```", ""]
    tasks = sorted({t for m in models for t in m.get("scores", {})})
    lines += ["| target | model | arch | predicted ms | measured ms | speedup | " + " | ".join(tasks) + " | score |",
              "|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|"]
    for m in models:
        s = m.get("scores", {})
        lines.append(f"| {m['speedup_target']:g}x | {m['kind']} | {m['arch']} | {m['predicted_ms']:.2f} | "
                     f"{m['measured_ms']:.2f} | {m['measured_speedup']:.1f}x | "
                     + " | ".join(f"{100 * s[t]:.1f}" if t in s else "-" for t in tasks)
                     + (f" | {100 * m['score']:.1f} |" if m.get("score") is not None else " | - |"))
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
        for role, marker in (("sampled", "o"), ("conventional", "s")):
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
