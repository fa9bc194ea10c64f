"""The search's picture: fitness by generation, and predicted latency against fitness with the window drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..io import atomic_path
from .records import CandidateRecord
from .target import LatencyWindow


def plot_search(records: Sequence[CandidateRecord], window: LatencyWindow, path: str | Path, title: str = "") -> Path:
    """Write a two-panel PNG (matplotlib, Agg backend) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.fitness is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if done:
        gens = sorted({r.generation for r in done})
        left.scatter([r.generation for r in done], [r.fitness for r in done], s=14, alpha=0.6, label="candidate")
        best, best_so_far = float("-inf"), []
        for g in gens:
            best = max(best, max(r.fitness for r in done if r.generation == g))
            best_so_far.append(best)
        left.plot(gens, best_so_far, color="C3", marker="o", label="best so far")
        left.set_xticks(gens)
        left.legend(loc="lower right")
        right.scatter([r.latency_ms for r in done], [r.fitness for r in done], c=[r.generation for r in done],
                      cmap="viridis", s=16)
    left.set_xlabel("generation")
    left.set_ylabel("fitness")
    left.set_title("fitness by generation")
    right.axvspan(window.low_ms, window.high_ms, color="C2", alpha=0.15, label="admissible window")
    right.axvline(window.target_ms, color="C2", linestyle="--", label=f"target {window.target_ms:.3g} ms")
    lats = [r.latency_ms for r in done] + [window.low_ms, window.high_ms]
    span = max(lats) - min(lats)
    right.set_xlim(min(lats) - 0.15 * span, max(lats) + 0.15 * span)  # show both edges of the window
    right.set_xlabel("predicted latency (ms)")
    right.set_ylabel("fitness")
    right.set_title("latency vs fitness (colour = generation)")
    right.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
