"""The 19 architectures of the paper's Tables 4 and F.1, timed on this machine against BERT-base in the same run.

    python benchmarks/paper_speedups.py [--quick] --out paper_speedups.json [--clock cpu|wall] [--backend torch]

All 19 models and BERT-base are built first, then timed interleaved (every round runs every model once) at one
thread, batch 1, 128 tokens; speedup = median(BERT-base) / median(arch). Summary: Spearman correlation of the
paper's speedups with ours over the 11 pre-training-setting archs (`spearman`, goal >= 0.95), the 8 KD archs
(`spearman_kd`), all 19 (`spearman_all`), and `bert_base_ms`.
"""

from __future__ import annotations

import time

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result

# (name, setting, arch, paper speedup). Table 4 lists BERT / AutoTinyBERT pairs per constraint; Table F.1 adds
# the ~10x pre-training models (BERT-S5, AutoTinyBERT-S5, AutoTinyBERT-Fast-S5).
PAPER_ARCHS = [
    ("BERT-S1", "pretrain", "4-512-2048-8-512", 7.1),
    ("AutoTinyBERT-S1", "pretrain", "5-564-1054-8-512", 7.2),
    ("BERT-S2", "pretrain", "4-320-1280-5-320", 14.8),
    ("AutoTinyBERT-S2", "pretrain", "4-396-624-6-384", 15.7),
    ("BERT-S3", "pretrain", "4-256-1024-4-256", 20.1),
    ("AutoTinyBERT-S3", "pretrain", "4-432-384-4-256", 20.2),
    ("BERT-S4", "pretrain", "4-192-768-3-192", 28.4),
    ("AutoTinyBERT-S4", "pretrain", "3-320-608-4-256", 27.2),
    ("BERT-S5", "pretrain", "4-384-1536-6-384", 9.3),
    ("AutoTinyBERT-S5", "pretrain", "5-450-636-6-384", 10.8),
    ("AutoTinyBERT-Fast-S5", "pretrain", "5-432-720-6-384", 10.3),
    ("BERT-KD-S1", "kd", "4-512-2048-12-516", 4.9),
    ("AutoTinyBERT-KD-S1", "kd", "5-564-1024-12-528", 4.6),
    ("BERT-KD-S2", "kd", "4-312-1200-12-312", 9.8),
    ("AutoTinyBERT-KD-S2", "kd", "5-324-600-12-324", 9.0),
    ("BERT-KD-S3", "kd", "4-264-1056-12-264", 11.7),
    ("AutoTinyBERT-KD-S3", "kd", "5-280-512-12-276", 10.7),
    ("BERT-KD-S4", "kd", "4-192-768-12-192", 17.0),
    ("AutoTinyBERT-KD-S4", "kd", "4-256-480-12-192", 17.0),
]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="cpu: the thread's CPU time (robust on a shared machine; default); wall: elapsed time")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "onnxruntime-int8"), default="torch")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    started = time.time()

    import numpy as np
    from scipy.stats import spearmanr

    from autotinybert.latency import measure_latency

    repeats = args.repeats or (5 if args.quick else 21)
    warmup = 1 if args.quick else 3
    records = measure_latency([a for _, _, a, _ in PAPER_ARCHS], backend=args.backend, threads=1, batch=1,
                              seq_len=128, warmup=warmup, repeats=repeats, reference=True, clock=args.clock)
    reference = records[-1]
    rows = []
    for (name, setting, arch, paper), record in zip(PAPER_ARCHS, records):
        measured = reference.median_ms / record.median_ms
        rows.append({"name": name, "setting": setting, "arch": arch, "paper_speedup": paper,
                     "ms": round(record.median_ms, 3), "iqr_ms": round(record.iqr_ms, 3),
                     "speedup": round(measured, 2), "ratio_to_paper": round(measured / paper, 3)})

    def rho(selected):
        return float(spearmanr([r["paper_speedup"] for r in selected], [r["speedup"] for r in selected]).statistic)

    pre = [r for r in rows if r["setting"] == "pretrain"]
    kd = [r for r in rows if r["setting"] == "kd"]
    summary = {"spearman": round(rho(pre), 4), "spearman_kd": round(rho(kd), 4), "spearman_all": round(rho(rows), 4),
               "bert_base_ms": round(reference.median_ms, 2)}
    print_table(rows, title=f"paper vs measured speedup ({args.backend}, 1 thread, batch 1, 128 tokens, "
                            f"{args.clock} clock, median of {repeats} interleaved repeats)")
    ratios = lambda rs: np.round(np.quantile([r["ratio_to_paper"] for r in rs], [0, 0.5, 1]), 3).tolist()  # noqa
    print(f"\nmeasured / paper speedup, min-median-max: pre-training {ratios(pre)}, KD {ratios(kd)}")
    print_summary(summary)
    settings = {"quick": args.quick, "backend": args.backend, "clock": args.clock, "threads": 1, "batch": 1,
                "seq_len": 128, "warmup": warmup, "repeats": repeats, "reference": "12-768-3072-12-768",
                "bert_base_iqr_ms": round(reference.iqr_ms, 3), "ratio_to_paper_pretrain_min_med_max": ratios(pre),
                "ratio_to_paper_kd_min_med_max": ratios(kd)}
    write_result(args.out, "paper_speedups", summary, rows, settings, started)


if __name__ == "__main__":
    main()
