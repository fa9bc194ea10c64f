"""`autotinybert latency measure|fit|bench`: latency on this machine, the predictor, a quick speedup table."""

from __future__ import annotations

import json

from . import Command


def run_measure(config) -> int:
    from ..latency import measure_dataset

    summary = measure_dataset(config.space, config.n, config.out, seed=config.seed,
                              reference_every=config.reference_every, progress=config.progress,
                              **config.timing_kwargs())
    reference = "no BERT-base run yet" if summary.reference_ms is None else \
        f"BERT-base = {summary.reference_ms:.2f} ms (median over the file)"
    print(f"{summary.path}: {summary.measured} measured, {summary.skipped} already there ({config.n} archs x "
          f"{config.passes} passes), "
          f"{summary.references} BERT-base reference runs; {reference}; {summary.seconds:.0f} s")
    return 0


def run_fit(config) -> int:
    from pathlib import Path

    from ..errors import UserError
    from ..io import check_output
    from ..latency import fit_predictor, load_datasets

    out = Path(config.out)
    if out.is_dir():
        raise UserError(f"out={out} is a folder; give a file path ending in .json or .safetensors")
    check_output(out, [("files", f) for f in config.files] + [("test", f) for f in config.test or []], folder=False)
    dataset = load_datasets(config.files)
    tests = load_datasets(config.test) if config.test else None
    predictor = fit_predictor(dataset, kind=config.kind, folds=config.folds, seed=config.seed)
    predictor.save(out)
    print(predictor.describe())
    if tests is not None:
        m = predictor.evaluate(tests.records)
        print(f"held-out ({m.n} archs): RMSE {m.rmse_ms:.3f} ms, MAPE {m.mape:.2f} %, worst {m.worst_pct:.2f} %, "
              f"Kendall tau {m.kendall_tau:.3f}")
    print(f"saved {out}")
    return 0


def run_bench(config) -> int:
    from ..arch import Arch
    from ..latency import LatencyPredictor, measure_latency

    archs = [Arch.parse(a) for a in config.archs]
    predictor = LatencyPredictor.load(config.predictor) if config.predictor else None
    if predictor is not None:
        predictor.check_device({k: getattr(config, k) for k in ("backend", "device", "threads", "batch", "seq_len",
                                                                "clock")})
    records = measure_latency(archs, reference=True, seed=config.seed, **config.timing_kwargs())
    reference = records[-1]
    if config.as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    header = f"{'arch':<32} {'ms':>9} {'IQR ms':>8} {'speedup':>8}"
    if predictor is not None:
        header += f" {'pred ms':>9} {'pred x':>7}"
    how = (f"anchored: each arch timed beside its nearest anchor model ({config.repeats}+ rounds, "
           f"{config.budget_s:g} s budget), ms = ratio to BERT-base x BERT-base's median"
           if config.protocol == "anchored" else f"median of {reference.repeats} interleaved repeats")
    print(f"{config.backend} on {config.device}, {config.threads} thread(s), batch {config.batch}, "
          f"{config.seq_len} tokens, {config.clock} clock, {how}")
    header = header.replace(f"{'IQR ms':>8}", f"{'IQR ms':>8} {'rounds':>6}")
    print(header)
    for r in records:
        name = f"{r.arch}" + (" (BERT-base)" if r.is_reference else "")
        line = (f"{name:<32} {r.median_ms:>9.2f} {r.iqr_ms:>8.2f} {r.repeats:>6} "
                f"{reference.median_ms / r.median_ms:>7.2f}x")
        if predictor is not None:
            line += f" {predictor.predict(r.arch):>9.2f} {predictor.predict_speedup(r.arch):>6.2f}x"
        print(line)
    return 0


COMMANDS = [
    Command("latency measure", "sample archs from a space and append their latency on this machine to a JSONL file",
            "autotinybert.latency.config:MeasureConfig", run_measure,
            examples=("autotinybert latency measure space=cpu-mlm n=1000 out=runs/latency/cpu-mlm.jsonl",)),
    Command("latency fit", "fit a latency predictor on one or more latency files",
            "autotinybert.latency.config:FitConfig", run_fit,
            examples=("autotinybert latency fit runs/latency/cpu-mlm.jsonl out=runs/latency/predictor.json",)),
    Command("latency bench", "time archs and BERT-base interleaved; print ms and speedup",
            "autotinybert.latency.config:BenchConfig", run_bench,
            examples=("autotinybert latency bench 4-256-1024-4-256 2-128-512-2-128 threads=1",)),
]
