"""Shared plumbing for benchmarks: arguments, the machine record, the JSON result and a printed table.

Every benchmark runs as ``python benchmarks/<name>.py [--quick] --out FILE.json`` and writes
``{"benchmark", "summary" (flat dict of headline numbers), "rows", "settings", "machine", "versions"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="smaller run that still measures the real thing")
    p.add_argument("--out", required=True, help="where to write the JSON result")
    return p


def machine() -> dict[str, Any]:
    from autotinybert.latency.device import cpu_model

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "tokenizers", "numpy", "onnxruntime", "autotinybert"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            pass
    return out


def write_result(path: str | Path, name: str, summary: dict[str, Any], rows: list[dict[str, Any]],
                 settings: dict[str, Any], started: float | None = None) -> None:
    from autotinybert.io import atomic_write_json

    flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    if len(flat) != len(summary):
        raise ValueError("summary must be flat (numbers and strings only)")
    result = {"benchmark": name, "summary": summary, "rows": rows, "settings": settings,
              "machine": machine(), "versions": versions(),
              "wall_s": round(time.time() - started, 1) if started else None}
    atomic_write_json(path, result)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Iterable[str] | None = None, title: str | None = None) -> None:
    rows = list(rows)
    if not rows:
        return
    columns = list(columns or rows[0].keys())
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    if title:
        print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def print_summary(summary: dict[str, Any]) -> None:
    print_table([{"key": k, "value": v} for k, v in summary.items()], title="summary")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2)
