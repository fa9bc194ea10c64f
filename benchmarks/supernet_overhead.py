"""What the elastic supernet costs over the standalone model it contains, and our BERT against stock transformers.

(a) One training step (forward, MLM loss on 15 % of positions, backward) of the paper-scale supernet run with arch A
    against the extracted standalone model of A on the same batch (8 x 128), interleaved, at 1 thread and at 2; the
    paper's Table 4 archs in the `mlm` and `kd` presets. Goal: median ratio <= 1.05, max <= 1.10 (1 thread).
    The supernet's gradients accumulate in place in persistent buffers, as in the trainer (`layers.sliced`,
    `train.distributed.GradientBuffers`): zeroing them belongs to the optimizer step (once per M sub-models), like
    AdamW's update, so it is timed apart (`zero_ms`), not in the step. `reference_ratio` is the same step with plain
    autograd slicing (`layers.reference_gradients`, full-size gradients per use: the path before issue 16), timed
    in the same interleaved rounds.
(b) Inference latency, batch 1 x 128 tokens, 1 thread: `AutoTinyBertModel` against stock `transformers.BertModel`
    with the same weights, for qkv == hidden archs. Goal: median ratio <= 1.00.

    python benchmarks/supernet_overhead.py [--quick] [--threads 1,2] --out overhead.json
"""

from __future__ import annotations

import gc
import os
import time

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from _common import median, parser, print_summary, print_table, write_result
from transformers import BertConfig, BertModel

from autotinybert import Arch, AutoTinyBertConfig, AutoTinyBertModel, SearchSpace, SuperBertConfig, \
    SuperBertForMaskedLM, extract
from autotinybert.layers import reference_gradients

TABLE4 = {
    "mlm": ["4-512-2048-8-512", "5-564-1054-8-512", "4-320-1280-5-320", "4-396-624-6-384",
            "4-256-1024-4-256", "4-432-384-4-256", "4-192-768-3-192", "3-320-608-4-256"],
    "kd": ["4-512-2048-12-516", "5-564-1024-12-528", "4-312-1200-12-312", "5-324-600-12-324",
           "4-264-1056-12-264", "5-280-512-12-276", "4-192-768-12-192", "4-256-480-12-192"],
}
PLAIN = ["12-768-3072-12-768", "4-512-2048-8-512", "4-320-1280-5-320", "4-256-1024-4-256", "4-192-768-3-192",
         "4-312-1200-12-312", "4-264-1056-12-264"]
VOCAB = 30522


def mlm_batch(B: int, T: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB, (B, T), generator=g)
    labels = torch.where(torch.rand(B, T, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return ids, torch.ones(B, T, dtype=torch.long), labels


def supernet_step(model, arch, ids, mask, labels) -> tuple[float, float]:
    """(step seconds, seconds to zero the persistent gradient buffers afterwards)."""
    start = time.perf_counter()
    model(ids, mask, arch=arch, labels=labels).loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=False)  # in place, as `GradientBuffers.zero` after each optimizer step
    return elapsed, time.perf_counter() - start - elapsed


def reference_step(model, arch, ids, mask, labels) -> float:
    """The supernet step with plain autograd slicing; its gradients are set to None after it, as before."""
    grads = {p: p.grad for p in model.parameters()}  # the in-place path's buffers, kept for its next step
    model.zero_grad(set_to_none=True)
    with reference_gradients():
        start = time.perf_counter()
        model(ids, mask, arch=arch, labels=labels).loss.backward()
        elapsed = time.perf_counter() - start
    for p, g in grads.items():
        p.grad = g
    return elapsed


def standalone_step(model, ids, mask, labels) -> float:
    """The same computation on the extracted model: encoder, MLM head on the labelled positions only, backward."""
    start = time.perf_counter()
    hidden = model.bert(ids, attention_mask=mask).last_hidden_state
    selected = labels != -100
    logits = model.cls(hidden[selected])
    F.cross_entropy(logits, labels[selected]).backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def train_step_rows(preset: str, archs: list[str], steps: int, batch: tuple[int, int]) -> list[dict]:
    torch.manual_seed(0)
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.preset(preset), vocab_size=VOCAB,
                                                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    supernet.train()
    rows = []
    for text in archs:
        arch = Arch.parse(text)
        standalone = extract(supernet, arch).train()
        ids, mask, labels = mlm_batch(*batch, seed=0)
        sup, zero, alone, ref = [], [], [], []
        run = {"supernet": lambda: sup.append(supernet_step(supernet, arch, ids, mask, labels)[0]),
               "standalone": lambda: alone.append(standalone_step(standalone, ids, mask, labels)),
               "reference": lambda: ref.append(reference_step(supernet, arch, ids, mask, labels))}
        for _ in range(2):  # warm-up all three
            for fn in run.values():
                fn()
        sup.clear(), alone.clear(), ref.clear()
        orders = [("standalone", "supernet", "reference"), ("supernet", "reference", "standalone"),
                  ("reference", "standalone", "supernet")]
        for i in range(steps):  # interleaved, rotating which goes first
            for name in orders[i % 3]:
                run[name]()
        for _ in range(3):
            zero.append(supernet_step(supernet, arch, ids, mask, labels)[1])
        rows.append({"part": "train_step", "preset": preset, "arch": text, "threads": torch.get_num_threads(),
                     "supernet_ms": 1e3 * median(sup), "standalone_ms": 1e3 * median(alone),
                     "ratio": median([s / a for s, a in zip(sup, alone)]),
                     "reference_ms": 1e3 * median(ref), "reference_ratio": median([r / a for r, a in zip(ref, alone)]),
                     "zero_ms": 1e3 * median(zero), "steps": steps})
        print_table(rows[-1:], title=None) if len(rows) == 1 else print("  ".join(
            str(round(v, 3)) if isinstance(v, float) else str(v) for v in rows[-1].values()))
        del standalone
        gc.collect()
    del supernet
    gc.collect()
    return rows


@torch.inference_mode()
def inference_rows(archs: list[str], repeats: int, seq_len: int) -> list[dict]:
    rows = []
    ids = torch.randint(1000, VOCAB, (1, seq_len), generator=torch.Generator().manual_seed(0))
    for text in archs:
        arch = Arch.parse(text)
        torch.manual_seed(0)
        ours = AutoTinyBertModel(AutoTinyBertConfig.from_arch(arch)).eval()
        bert = BertModel(BertConfig(hidden_size=arch.hidden, num_hidden_layers=arch.layers,
                                    num_attention_heads=arch.heads, intermediate_size=arch.ffn)).eval()
        bert.load_state_dict(ours.state_dict())
        for _ in range(3):
            ours(ids), bert(ids)
        a, b = [], []
        for i in range(repeats):
            for model, sink in ((ours, a), (bert, b)) if i % 2 else ((bert, b), (ours, a)):
                start = time.perf_counter()
                model(ids)
                sink.append(time.perf_counter() - start)
        rows.append({"part": "inference", "arch": text, "ours_ms": 1e3 * median(a), "hf_bert_ms": 1e3 * median(b),
                     "ratio": median([x / y for x, y in zip(a, b)]), "repeats": repeats})
        print(f"  {text:<20} ours {rows[-1]['ours_ms']:.2f} ms  stock BertModel {rows[-1]['hf_bert_ms']:.2f} ms  "
              f"ratio {rows[-1]['ratio']:.3f}")
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts for (a); (b) runs at 1 thread")
    args = p.parse_args()
    started = time.time()
    thread_counts = [int(t) for t in args.threads.split(",")]
    steps = 6 if args.quick else 12
    batch = (8, 128)
    archs = {p: (a[:3] if args.quick else a) for p, a in TABLE4.items()}
    plain = PLAIN[:4] if args.quick else PLAIN
    repeats = 10 if args.quick else 30

    summary: dict[str, float] = {}
    train_rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        print(f"(a) training step, batch {batch[0]}x{batch[1]}, {threads} thread(s), {steps} interleaved steps "
              "per arch")
        rows = []
        for preset, names in archs.items():
            rows += train_step_rows(preset, names, steps, batch)
        print_table(rows, ["preset", "arch", "supernet_ms", "standalone_ms", "ratio", "reference_ratio", "zero_ms"],
                    title=f"(a) training step, {threads} thread(s)")
        suffix = "" if threads == 1 else f"_{threads}threads"
        ratios = {preset: [r["ratio"] for r in rows if r["preset"] == preset] for preset in archs}
        every = [r["ratio"] for r in rows]
        summary |= {
            f"train_step_ratio_median{suffix}": round(median(every), 4),
            f"train_step_ratio_max{suffix}": round(max(every), 4),
            f"train_step_ratio_median_mlm{suffix}": round(median(ratios["mlm"]), 4),
            f"train_step_ratio_median_kd{suffix}": round(median(ratios["kd"]), 4),
            f"reference_ratio_median{suffix}": round(median([r["reference_ratio"] for r in rows]), 4),
            f"reference_ratio_max{suffix}": round(max(r["reference_ratio"] for r in rows), 4),
            f"zero_ms_median{suffix}": round(median([r["zero_ms"] for r in rows]), 2),
        }
        train_rows += rows

    torch.set_num_threads(1)
    print(f"\n(b) inference, batch 1 x 128, 1 thread, {repeats} interleaved repeats per arch")
    inf_rows = inference_rows(plain, repeats, 128)
    print_table(inf_rows, ["arch", "ours_ms", "hf_bert_ms", "ratio"], title="(b) inference vs stock BertModel")
    summary |= {
        "inference_ratio_vs_hf_median": round(median([r["ratio"] for r in inf_rows]), 4),
        "inference_ratio_vs_hf_max": round(max(r["ratio"] for r in inf_rows), 4),
    }
    print_summary(summary)
    write_result(args.out, "supernet_overhead", summary, train_rows + inf_rows,
                 {"quick": args.quick, "threads": thread_counts, "inference_threads": 1, "train_batch": list(batch),
                  "train_steps": steps, "inference_repeats": repeats, "vocab_size": VOCAB, "mlm_fraction": 0.15,
                  "load_average_at_end": list(os.getloadavg())}, started)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
