"""`autotinybert latency measure|fit|bench`: latency on this machine, the predictor, a quick speedup table."""

from __future__ import annotations

import json

ORDER = 30


def _settings(p) -> None:
    p.add_argument("--backend", choices=("torch", "onnxruntime"), default="torch",
                   help="eager PyTorch, or ONNX Runtime on a torch.onnx.export of the model (default torch)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1, the paper's single CPU)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per model first")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per model; the median is reported")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time (default; use on the deployment machine); cpu: the thread's CPU time, "
                        "robust on a shared, busy machine (1 thread on the CPU only)")


def register(subparsers) -> None:
    p = subparsers.add_parser("latency", help="measure latency on this machine, fit and use a latency predictor",
                              description="Latency on this machine: a measured dataset, a fitted predictor, "
                                          "speedups against BERT-base measured in the same run.")
    sub = p.add_subparsers(dest="latency_command", metavar="SUBCOMMAND")

    m = sub.add_parser("measure", help="sample archs from a space and append their latency to a JSONL file",
                       description="Sample N archs (seeded, every layer count) and append one JSON line per arch; "
                                   "BERT-base is re-measured every --reference-every archs. Rerun to resume.")
    m.add_argument("--space", required=True, help="search space preset or YAML file")
    m.add_argument("--n", type=int, required=True, help="number of archs in the dataset")
    m.add_argument("--out", required=True, help="JSONL file (appended to; archs already in it are skipped)")
    m.add_argument("--reference-every", type=int, default=25, help="re-measure BERT-base every N archs")
    m.add_argument("--no-progress", action="store_true")
    _settings(m)
    m.set_defaults(func=run_measure)

    f = sub.add_parser("fit", help="fit a latency predictor on one or more latency files",
                       description="Fit the analytic cost model and the MLP, pick the better by cross-validated "
                                   "MAPE, save it (JSON, or safetensors for a .safetensors path).")
    f.add_argument("files", nargs="+", help="latency JSONL files from 'latency measure' (same settings)")
    f.add_argument("--out", required=True, help="predictor file (.json or .safetensors)")
    f.add_argument("--kind", choices=("auto", "analytic", "mlp"), default="auto")
    f.add_argument("--folds", type=int, default=5)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--test", nargs="*", default=[], help="held-out latency files to report metrics on")
    f.set_defaults(func=run_fit)

    b = sub.add_parser("bench", help="measure archs and BERT-base interleaved; print ms and speedup",
                       description="Time the given archs and BERT-base in the same interleaved run and print "
                                   "median ms, IQR and speedup (optionally beside a predictor's numbers).")
    b.add_argument("archs", nargs="+", metavar="ARCH", help="architectures as L-dm-df-h-dqkv")
    b.add_argument("--predictor", help="also print this predictor's ms and speedup")
    b.add_argument("--json", action="store_true", help="print the records as JSON")
    _settings(b)
    b.set_defaults(func=run_bench)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def run_measure(args) -> int:
    from ..latency import measure_dataset

    summary = measure_dataset(args.space, args.n, args.out, seed=args.seed, backend=args.backend,
                              device=args.device, threads=args.threads, batch=args.batch, seq_len=args.seq_len,
                              warmup=2 if args.warmup is None else args.warmup,
                              repeats=7 if args.repeats is None else args.repeats,
                              reference_every=args.reference_every, clock=args.clock,
                              progress=not args.no_progress)
    print(f"{summary.path}: {summary.measured} measured, {summary.skipped} already there, "
          f"{summary.references} BERT-base reference runs; BERT-base = {summary.reference_ms:.2f} ms "
          f"(median over the file); {summary.seconds:.0f} s")
    return 0


def run_fit(args) -> int:
    from pathlib import Path

    from ..latency import fit_predictor, load_datasets

    out = Path(args.out)
    if out.is_dir():
        from ..errors import UserError

        raise UserError(f"--out {out} is a folder; give a file path ending in .json or .safetensors")
    dataset = load_datasets(args.files)
    tests = load_datasets(args.test) if args.test else None
    predictor = fit_predictor(dataset, kind=args.kind, folds=args.folds, seed=args.seed)
    predictor.save(out)
    print(predictor.describe())
    if tests is not None:
        m = predictor.evaluate(tests.records)
        print(f"held-out ({m.n} archs): RMSE {m.rmse_ms:.3f} ms, MAPE {m.mape:.2f} %, worst {m.worst_pct:.2f} %, "
              f"Kendall tau {m.kendall_tau:.3f}")
    print(f"saved {out}")
    return 0


def run_bench(args) -> int:
    from ..arch import Arch
    from ..latency import LatencyPredictor, measure_latency

    archs = [Arch.parse(a) for a in args.archs]
    predictor = LatencyPredictor.load(args.predictor) if args.predictor else None
    if predictor is not None:
        predictor.check_device({"backend": args.backend, "device": args.device, "threads": args.threads,
                                "batch": args.batch, "seq_len": args.seq_len, "clock": args.clock})
    records = measure_latency(archs, backend=args.backend, threads=args.threads, batch=args.batch,
                              seq_len=args.seq_len, device=args.device,
                              warmup=3 if args.warmup is None else args.warmup,
                              repeats=10 if args.repeats is None else args.repeats, reference=True, seed=args.seed,
                              clock=args.clock)
    reference = records[-1]
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    header = f"{'arch':<32} {'ms':>9} {'IQR ms':>8} {'speedup':>8}"
    if predictor is not None:
        header += f" {'pred ms':>9} {'pred x':>7}"
    print(f"{args.backend} on {args.device}, {args.threads} thread(s), batch {args.batch}, {args.seq_len} tokens, "
          f"{args.clock} clock, median of {reference.repeats} interleaved repeats")
    print(header)
    for r in records:
        name = f"{r.arch}" + (" (BERT-base)" if r.is_reference else "")
        line = f"{name:<32} {r.median_ms:>9.2f} {r.iqr_ms:>8.2f} {reference.median_ms / r.median_ms:>7.2f}x"
        if predictor is not None:
            line += f" {predictor.predict(r.arch):>9.2f} {predictor.predict_speedup(r.arch):>6.2f}x"
        print(line)
    return 0
