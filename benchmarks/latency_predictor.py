"""Latency labels and predictors on this machine: the measurement noise floor, then held-out predictor accuracy.

    taskset -c 1 python benchmarks/latency_predictor.py [--quick] --out latency_predictor.json [--data DIR]

Everything runs at 1 thread, batch 1, 128 tokens, on the thread's CPU clock (robust to other processes on a shared
machine); pin it to one core. Three spaces: the paper's `mlm`, the CPU-scale `cpu-mlm`, and the demo's space (read
from the packaged demo config).

1. Campaign A, per space: ``measure_dataset`` with the default (anchored) protocol over the first
   ``n_train + n_test`` sampled archs (file ``<data>/<space>.jsonl``, resumed when rerun).
2. Campaign B, per space, after every campaign A: the first `n_floor` of the same archs again, in a separate file
   with its own anchor calibration. The noise floor is the MAPE between the two campaigns, per size band
   (< 5 ms, 5-20 ms, > 20 ms by campaign A's ms), as raw ms (the median of each arch's raw samples) and as
   speedups over BERT-base (each campaign's own). The old protocol (back to back, median of 7, BERT-base every 25
   archs) is measured the same way on the first `n_floor_old` archs for comparison.
3. Predictors, per space: trained on campaign A's first `n_train` archs, scored on the next `n_test` (held out) as
   speedups: MAPE (all and < 5 ms) and Kendall tau of every kind (analytic, mlp, boosted) and of the one
   `fit_predictor` picks by 5-fold cross-validation; a learning curve gives the training measurements the picked
   kind needs to reach held-out tau 0.95.

Summary: `noise_floor_mape` (speedups, the worse of the presets mlm and cpu-mlm), `noise_floor_mape_small`
(speedups, archs < 5 ms, the presets pooled), `noise_floor_mape_raw_ms`, `noise_floor_mape_old`,
`noise_floor_mape_small_old`, `noise_floor_mape_within_ladder` (each arch's ratio to its anchor only: the floor
without the anchors' chain to BERT-base, whose shift between the campaigns is in `settings.floors`), the first two
over every space (`*_all_spaces`, demo included), `mape` and
`kendall_tau` (worst over the presets), then per space (`<space>_` prefix): `noise_floor_mape`, `mape`, `mape_small`,
`kendall_tau`, `n_for_tau_0.95` (null: not reached), `chosen`. The anchored files keep every raw sample, so
`--statistic` re-reads them with another statistic. Protocol: `--budget` 1.5 s per arch over `--passes` 3, the
anchors calibrated before each pass and after the last (the library's defaults for the CLI and the pipeline).
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result

PRESETS = ("mlm", "cpu-mlm")  # the "worse preset": the library's search-space presets
CURVE = (10, 20, 40, 60, 80, 120, 160, 240, 320, 480, 640, 1000)
BANDS = (("<5ms", 0.0, 5.0), ("5-20ms", 5.0, 20.0), (">20ms", 20.0, float("inf")))
SMALL_MS = 5.0


def demo_space() -> dict:
    """The demo pipeline's search space, from the packaged demo config."""
    from importlib import resources

    import yaml

    config = yaml.safe_load(resources.files("autotinybert").joinpath("configs/demo.yaml").read_text())
    return {"name": "demo", **config["supernet"]["space"]}


def mape(true, pred) -> float:
    import numpy as np

    t, p = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.mean(np.abs(p - t) / t) * 100) if len(t) else float("nan")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="folder of the latency JSONL files (resumed); default "
                                                 "runs/latency-bench/quick or .../full")
    p.add_argument("--presets", nargs="+", default=["mlm", "cpu-mlm", "demo"])
    p.add_argument("--budget", type=float, default=1.5, help="anchored protocol: timed seconds per arch (all "
                                                              "passes)")
    p.add_argument("--repeats", type=int, default=5, help="anchored protocol: rounds per arch (per pass) at least")
    p.add_argument("--passes", type=int, default=3, help="anchored protocol: passes over the archs (budget split "
                                                         "over them)")
    p.add_argument("--statistic", default=None, help="anchored protocol: statistic of the per-round ratios, applied "
                                                     "when reading the files (default: the library's)")
    args = p.parse_args()
    started = time.time()

    import os
    from pathlib import Path

    import numpy as np
    from scipy.stats import kendalltau

    from autotinybert.latency import fit_predictor, measure_dataset, read_dataset, sample_archs
    from autotinybert.latency.measure import DEFAULT_STATISTIC
    from autotinybert.latency.models import MODEL_KINDS
    from autotinybert.space import SearchSpace

    # sized for ~30 min (full) on one shared core under load 5-7, where a CPU-clock second takes ~2.5 s of wall time
    if args.quick:
        n_train, n_test, n_floor, n_floor_old = 40, 20, 20, 12
    else:
        n_train, n_test, n_floor, n_floor_old = 100, 40, 40, 16
    data_dir = Path(args.data or f"runs/latency-bench/{'quick' if args.quick else 'full'}")
    common = dict(clock="cpu", threads=1, batch=1, seq_len=128, seed=0, progress=False)
    # the anchors calibrated before each pass and after the last, in both campaigns alike
    anchored = dict(protocol="anchored", warmup=2, repeats=args.repeats, budget_s=args.budget, max_repeats=400,
                    reference_every=10_000, passes=args.passes)
    old = dict(protocol="interleaved", warmup=2, repeats=7, reference_every=25)  # the protocol before this one
    statistic = args.statistic or DEFAULT_STATISTIC
    spaces = {name: SearchSpace.load(demo_space() if name == "demo" else name) for name in args.presets}
    loads: list[float] = []

    def measure(name: str, n: int, tag: str, protocol: dict) -> object:
        loads.append(os.getloadavg()[0])
        t0 = time.time()
        path = data_dir / f"{name}{tag}.jsonl"
        measure_dataset(spaces[name], n, path, **common, **protocol)
        print(f"[{name}{tag}] {n} archs in {path}: {time.time() - t0:.0f} s (load {loads[-1]:.2f})", flush=True)
        return read_dataset(path, statistic)

    campaign_a = {name: measure(name, n_train + n_test, "", anchored) for name in spaces}
    campaign_b = {name: measure(name, n_floor, "-repeat", anchored) for name in spaces}
    old_a = {name: measure(name, n_floor_old, "-old", old) for name in spaces}
    old_b = {name: measure(name, n_floor_old, "-old-repeat", old) for name in spaces}
    measure_s = time.time() - started

    # ----- the noise floor: two campaigns over the same archs --------------------------------------------------
    rows: list[dict] = []
    floor: dict[str, dict] = {}
    small_pairs: dict[tuple[str, str], list] = {}  # (space, protocol) -> [(speedup A, speedup B)] of archs < 5 ms
    for name in spaces:
        for which, a, b in (("new", campaign_a[name], campaign_b[name]), ("old", old_a[name], old_b[name])):
            ra, rb = {r.arch: r for r in a.records}, {r.arch: r for r in b.records}
            archs = [x for x in ra if x in rb]
            ms_a = np.array([ra[x].median_ms for x in archs])  # normalised ms (anchored) or raw median (old)
            raw_a = np.array([ra[x].raw_median_ms or ra[x].median_ms for x in archs])
            raw_b = np.array([rb[x].raw_median_ms or rb[x].median_ms for x in archs])
            sp_a, sp_b = a.reference_ms / ms_a, b.reference_ms / np.array([rb[x].median_ms for x in archs])
            band_ms = raw_a
            for band, lo, hi in (("all", 0.0, float("inf")), *BANDS):
                keep = (band_ms >= lo) & (band_ms < hi)
                if not keep.any():
                    continue
                rows.append({"table": "noise_floor", "space": name, "protocol": which, "band": band,
                             "n": int(keep.sum()), "mape_speedup": round(mape(sp_a[keep], sp_b[keep]), 3),
                             "mape_raw_ms": round(mape(raw_a[keep], raw_b[keep]), 3)})
            floor[f"{name}/{which}"] = {"speedup": mape(sp_a, sp_b), "raw": mape(raw_a, raw_b),
                                        "bert_ms": (round(a.reference_ms, 1), round(b.reference_ms, 1))}
            if which == "new":  # the floor taken apart: each arch against its anchor, and the chains to BERT-base
                same = [x for x in archs if ra[x].anchor == rb[x].anchor]
                floor[f"{name}/{which}"]["within_ladder"] = mape([ra[x].anchor_ratio for x in same],
                                                                 [rb[x].anchor_ratio for x in same])
                chain_a, chain_b = a.chain(), b.chain()
                floor[f"{name}/{which}"]["chain_shift_pct"] = {
                    str(k): round(100 * (chain_a[k] / chain_b[k] - 1), 2) for k in chain_a if k in chain_b}
            small_pairs[name, which] = [(x, y) for x, y, m in zip(sp_a, sp_b, band_ms) if m < SMALL_MS]
    print_table([{k: v for k, v in r.items() if k != "table"} for r in rows if r["table"] == "noise_floor"],
                title="noise floor: MAPE (%) between two campaigns over the same archs")

    # ----- predictors on held-out archs, as speedups -----------------------------------------------------------
    per_space: dict[str, dict] = {}
    for name, space in spaces.items():
        data = campaign_a[name]
        by_arch = {r.arch: r for r in data.records}
        order = sample_archs(space, n_train + n_test, seed=0)  # the file's sampling order: train first
        train = [by_arch[a] for a in order[:n_train]]
        test = [by_arch[a] for a in order[n_train:]]
        ref = data.reference_ms
        test_archs = [r.arch for r in test]
        test_ms = np.array([r.median_ms for r in test])
        test_sp = ref / test_ms
        small = np.array([(r.raw_median_ms or r.median_ms) < SMALL_MS for r in test])

        t0 = time.time()
        predictor = fit_predictor(train + data.references, seed=0, device=data.device)
        fit_s = time.time() - t0
        print(f"\n[{name}] {predictor.describe()}")
        scores = {}
        for kind in MODEL_KINDS:
            model = predictor.model if kind == predictor.kind else fit_predictor(
                train + data.references, kind=kind, seed=0, device=data.device).model
            sp = ref / model.predict(test_archs)
            scores[kind] = {"mape": mape(test_sp, sp), "mape_small": mape(test_sp[small], sp[small]),
                            "tau": float(kendalltau(test_sp, sp).statistic), "worst": float(
                                np.max(np.abs(sp - test_sp) / test_sp) * 100)}
            rows.append({"table": "held_out", "space": name, "model": kind, "chosen": kind == predictor.kind,
                         "n_train": len(train), "n_test": len(test), "n_test_small": int(small.sum()),
                         "mape": round(scores[kind]["mape"], 3), "mape_small": round(scores[kind]["mape_small"], 3),
                         "worst_pct": round(scores[kind]["worst"], 2), "kendall_tau": round(scores[kind]["tau"], 4),
                         "cv_mape": round(predictor.report.cross_validation[kind].mape, 3)})
        print_table([{k: v for k, v in r.items() if k not in ("table", "space")} for r in rows
                     if r["table"] == "held_out" and r["space"] == name],
                    title=f"[{name}] held-out speedups ({len(test)} archs, {int(small.sum())} under {SMALL_MS:g} ms)")
        needed = None  # the picked kind's learning curve
        from autotinybert.latency.predictor import _fit_kind

        for n in [c for c in CURVE if c <= len(train)] + ([len(train)] if len(train) not in CURVE else []):
            archs, ms = [r.arch for r in train[:n]], np.array([r.median_ms for r in train[:n]])
            model = _fit_kind(predictor.kind, archs, ms, 1, 128, 0, {})
            tau = float(kendalltau(test_sp, ref / model.predict(test_archs)).statistic)
            rows.append({"table": "curve", "space": name, "model": predictor.kind, "n_train": n,
                         "mape": round(mape(test_sp, ref / model.predict(test_archs)), 3),
                         "kendall_tau": round(tau, 4)})
            if needed is None and tau >= 0.95:
                needed = n
        print(f"[{name}] training measurements for held-out tau >= 0.95 ({predictor.kind}): {needed}")
        per_space[name] = {"chosen": predictor.kind, "scores": scores[predictor.kind], "needed": needed,
                           "fit_s": round(fit_s, 1), "reference_ms": ref}

    # the headline keys: the presets (mlm, cpu-mlm) when measured, else every space; the demo space has its
    # own demo_* keys and enters the *_all_spaces ones
    headline = [n for n in spaces if n in PRESETS] or list(spaces)

    def worst(which: str, key: str, names) -> float:
        return round(max(floor[f"{n}/{which}"][key] for n in names), 3)

    def small(which: str, names) -> float | None:
        pairs = [pair for n in names for pair in small_pairs[n, which]]
        return round(mape(*zip(*pairs)), 3) if pairs else None

    summary = {
        "noise_floor_mape": worst("new", "speedup", headline),
        "noise_floor_mape_small": small("new", headline),
        "noise_floor_mape_raw_ms": worst("new", "raw", headline),
        "noise_floor_mape_old": worst("old", "speedup", headline),
        "noise_floor_mape_small_old": small("old", headline),
        "noise_floor_mape_within_ladder": worst("new", "within_ladder", headline),
        "noise_floor_mape_all_spaces": worst("new", "speedup", spaces),
        "noise_floor_mape_small_all_spaces": small("new", spaces),
    }
    new_floors = {k.split("/")[0]: v for k, v in floor.items() if k.endswith("/new")}
    for name, v in per_space.items():
        summary.update({f"{name}_noise_floor_mape": round(new_floors[name]["speedup"], 3),
                        f"{name}_noise_floor_mape_within_ladder": round(new_floors[name]["within_ladder"], 3),
                        f"{name}_mape": round(v["scores"]["mape"], 3),
                        f"{name}_mape_small": None if np.isnan(v["scores"]["mape_small"]) else
                        round(v["scores"]["mape_small"], 3),
                        f"{name}_kendall_tau": round(v["scores"]["tau"], 4), f"{name}_n_for_tau_0.95": v["needed"],
                        f"{name}_chosen": v["chosen"]})
    summary.update({"mape": round(max(per_space[n]["scores"]["mape"] for n in headline), 3),
                    "kendall_tau": round(min(per_space[n]["scores"]["tau"] for n in headline), 4),
                    "n_train": n_train, "n_test": n_test, "n_floor": n_floor, "load_avg_median": round(float(
                        np.median(loads)), 2), "measure_s": round(measure_s)})
    print_summary(summary)
    settings = {"quick": args.quick, "statistic": statistic, "clock": "cpu", "threads": 1, "batch": 1, "seq_len": 128, "data": str(data_dir),
                "anchored": anchored, "old": old, "spaces": {k: s.to_dict() for k, s in spaces.items()},
                "n_train": n_train, "n_test": n_test, "n_floor": n_floor, "n_floor_old": n_floor_old,
                "bands_ms": [b[0] for b in BANDS], "load_avg_at_each_campaign": [round(x, 2) for x in loads],
                "summary_aggregation": f"noise_floor_mape*, mape: worst (max) over the presets {headline}; small: "
                                       "pooled over them; kendall_tau: min over them; *_all_spaces: the same "
                                       "over every space (demo included); <space>_*: that space",
                "floors": floor,
                "per_space": {k: {"chosen": v["chosen"], "fit_s": v["fit_s"],
                                  "bert_base_ms": round(v["reference_ms"], 2),
                                  **{m: round(x, 4) for m, x in v["scores"].items()}} for k, v in per_space.items()}}
    write_result(args.out, "latency_predictor", summary, rows, settings, started)


if __name__ == "__main__":
    main()
