"""Latency predictors on this machine: held-out accuracy for the mlm and kd spaces, and ONNX Runtime vs eager.

    python benchmarks/latency_predictor.py [--quick] --out latency_predictor.json [--data runs/latency]

For each preset (`mlm`, `kd`) the latency dataset ``<data>/<preset>.jsonl`` is measured (or resumed: archs
already there are skipped) with ``autotinybert.latency.measure_dataset`` at 1 thread, batch 1, 128 tokens; the
first `n_train` sampled archs train, the next `n_test` are held out. `fit_predictor` picks analytic or MLP by
5-fold cross-validation on the training archs; both are also refitted and scored on the test archs, and a
learning curve gives the number of measurements each needs to reach Kendall tau 0.9 on the test archs.
Finally the 16 Table 4 archs are timed eager and through ONNX Runtime, interleaved in one run.

Summary (worst over the two presets): `mape` and `kendall_tau` of the chosen predictor on the held-out archs,
`n_train`, `n_test`, `mlp_mape`, `analytic_mape`, and `onnx_vs_eager_median` (median over archs of
ORT ms / eager ms).
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result
from paper_speedups import PAPER_ARCHS

CURVE = (20, 40, 80, 160, 320, 640, 1000)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/latency", help="folder of the latency JSONL files (resumed)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="cpu: the thread's CPU time (robust on a shared machine; default); wall: elapsed time")
    p.add_argument("--presets", nargs="+", default=["mlm", "kd"])
    args = p.parse_args()
    started = time.time()

    from pathlib import Path

    import numpy as np

    from autotinybert.latency import (AnalyticModel, Metrics, MLPModel, fit_predictor, measure_dataset,
                                      read_dataset, sample_archs)
    from autotinybert.latency.measure import make_runner, summarize, time_interleaved, torch_threads
    from autotinybert.space import SearchSpace

    n_train, n_test = (100, 30) if args.quick else (1000, 300)
    rows, per_preset = [], {}
    for preset in args.presets:
        path = Path(args.data) / f"{preset}.jsonl"
        space = SearchSpace.preset(preset)
        measure_dataset(space, n_train + n_test, path, seed=0, warmup=1, repeats=5, reference_every=25,
                        clock=args.clock)
        data = read_dataset(path)
        by_arch = {r.arch: r for r in data.records}
        order = sample_archs(space, n_train + n_test, seed=0)  # the file's sampling order: train first
        train = [by_arch[a] for a in order[:n_train]]
        test = [by_arch[a] for a in order[n_train:]]
        test_archs, test_ms = [r.arch for r in test], np.array([r.median_ms for r in test])

        t0 = time.time()
        predictor = fit_predictor(train + data.references, seed=0, device=data.device)
        fit_s = time.time() - t0
        chosen = predictor.evaluate(test)
        print(f"\n[{preset}] {predictor.describe()}")
        held_out = {}
        for kind, cls in (("analytic", AnalyticModel), ("mlp", MLPModel)):
            archs, ms = [r.arch for r in train], np.array([r.median_ms for r in train])
            model = cls.fit(archs, ms, batch=1, seq_len=128) if kind == "analytic" else cls.fit(archs, ms, seed=0)
            held_out[kind] = Metrics.of(test_ms, model.predict(test_archs))
            cv = predictor.report.cross_validation[kind]
            rows.append({"preset": preset, "model": kind, "chosen": kind == predictor.kind, "n_train": len(train),
                         "n_test": len(test), "test_rmse_ms": round(held_out[kind].rmse_ms, 3),
                         "test_mape": round(held_out[kind].mape, 3), "test_worst_pct": round(held_out[kind].worst_pct, 2),
                         "test_tau": round(held_out[kind].kendall_tau, 4), "cv_mape": round(cv.mape, 3),
                         "cv_tau": round(cv.kendall_tau, 4)})
        # learning curve: Kendall tau on the test archs against the number of training measurements
        needed = {}
        for kind, cls in (("analytic", AnalyticModel), ("mlp", MLPModel)):
            needed[kind] = None
            for n in [c for c in CURVE if c <= len(train)]:
                archs, ms = [r.arch for r in train[:n]], np.array([r.median_ms for r in train[:n]])
                model = cls.fit(archs, ms, batch=1, seq_len=128) if kind == "analytic" else cls.fit(archs, ms, seed=0)
                m = Metrics.of(test_ms, model.predict(test_archs))
                rows.append({"preset": preset, "model": kind, "curve_n_train": n, "test_mape": round(m.mape, 3),
                             "test_tau": round(m.kendall_tau, 4)})
                if needed[kind] is None and m.kendall_tau >= 0.9:
                    needed[kind] = n
        per_preset[preset] = {"chosen": predictor.kind, "metrics": chosen, "held_out": held_out, "needed": needed,
                              "n_train": len(train), "n_test": len(test), "reference_ms": predictor.reference_ms,
                              "fit_s": round(fit_s, 1),
                              "reference_spread_ms": [round(float(x), 2) for x in np.quantile(
                                  [r.median_ms for r in data.references], [0, 0.5, 1])]}
        print_table([r for r in rows if r["preset"] == preset and "curve_n_train" not in r],
                    title=f"[{preset}] held-out ({len(test)} archs) vs 5-fold CV on {len(train)}")
        print(f"[{preset}] measurements to reach held-out tau >= 0.9: {needed}")

    # ONNX Runtime vs eager on the Table 4 archs, both backends interleaved in one run
    table4 = [a for name, _, a, _ in PAPER_ARCHS if "S5" not in name]
    if args.quick:
        table4 = table4[::4]
    repeats = 5 if args.quick else 11
    with torch_threads(1):
        runners = [make_runner(a, backend=b, threads=1) for a in table4 for b in ("torch", "onnxruntime")]
        from autotinybert.latency.measure import clock_timer

        samples = time_interleaved(runners, warmup=2, repeats=repeats, timer=clock_timer(args.clock))
    onnx_rows = []
    for i, arch in enumerate(table4):
        eager, ort = summarize(samples[2 * i]).median_ms, summarize(samples[2 * i + 1]).median_ms
        onnx_rows.append({"arch": arch, "eager_ms": round(eager, 3), "onnxruntime_ms": round(ort, 3),
                          "onnx_vs_eager": round(ort / eager, 3)})
    print_table(onnx_rows, title="ONNX Runtime vs eager PyTorch (1 thread, interleaved)")
    rows += [{"preset": "table4", **r} for r in onnx_rows]

    worst = lambda key, fn: fn(v[key] for v in per_preset.values())  # noqa: E731
    summary = {
        "mape": round(max(v["metrics"].mape for v in per_preset.values()), 3),
        "kendall_tau": round(min(v["metrics"].kendall_tau for v in per_preset.values()), 4),
        "n_train": worst("n_train", min),
        "n_test": worst("n_test", min),
        "mlp_mape": round(max(v["held_out"]["mlp"].mape for v in per_preset.values()), 3),
        "analytic_mape": round(max(v["held_out"]["analytic"].mape for v in per_preset.values()), 3),
        "onnx_vs_eager_median": round(float(np.median([r["onnx_vs_eager"] for r in onnx_rows])), 3),
    }
    print_summary(summary)
    settings = {"quick": args.quick, "clock": args.clock, "threads": 1, "batch": 1, "seq_len": 128,
                "presets": args.presets, "data": args.data, "warmup": 1, "repeats": 5, "reference_every": 25,
                "summary_aggregation": "mape/mlp_mape/analytic_mape: worst (max) over presets; kendall_tau, "
                                       "n_train, n_test: min over presets",
                "per_preset": {k: {"chosen": v["chosen"], "test_mape": round(v["metrics"].mape, 3),
                                   "test_tau": round(v["metrics"].kendall_tau, 4),
                                   "test_rmse_ms": round(v["metrics"].rmse_ms, 3),
                                   "test_worst_pct": round(v["metrics"].worst_pct, 2),
                                   "n_to_tau_0.9": v["needed"], "bert_base_ms": round(v["reference_ms"], 2),
                                   "bert_base_min_med_max_ms": v["reference_spread_ms"], "fit_s": v["fit_s"]}
                               for k, v in per_preset.items()}}
    write_result(args.out, "latency_predictor", summary, rows, settings, started)


if __name__ == "__main__":
    main()
