"""What the elastic supernet costs over the standalone model it contains, and our BERT against stock transformers.

(a) One training step (forward, MLM loss on 15 % of positions, backward) of the paper-scale supernet run with arch A
    against the extracted standalone model of A on the same batch (8 x 128), interleaved, at 1 thread; the paper's
    Table 4 archs in the `mlm` and `kd` presets. Goal: median ratio <= 1.05.
(b) Inference latency, batch 1 x 128 tokens, 1 thread: `AutoTinyBertModel` against stock `transformers.BertModel`
    with the same weights, for qkv == hidden archs. Goal: median ratio <= 1.00.

    python benchmarks/supernet_overhead.py [--quick] --out overhead.json
"""

from __future__ import annotations

import gc
import time

import _common  # noqa: F401  (puts the checkout on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from _common import median, parser, print_summary, print_table, write_result
from transformers import BertConfig, BertModel

from autotinybert import Arch, AutoTinyBertConfig, AutoTinyBertModel, SearchSpace, SuperBertConfig, \
    SuperBertForMaskedLM, extract

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


def supernet_step(model, arch, ids, mask, labels) -> float:
    start = time.perf_counter()
    model(ids, mask, arch=arch, labels=labels).loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
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
        for _ in range(2):  # warm-up both
            supernet_step(supernet, arch, ids, mask, labels)
            standalone_step(standalone, ids, mask, labels)
        sup, alone = [], []
        for i in range(steps):  # interleaved, alternating which goes first
            if i % 2:
                sup.append(supernet_step(supernet, arch, ids, mask, labels))
                alone.append(standalone_step(standalone, ids, mask, labels))
            else:
                alone.append(standalone_step(standalone, ids, mask, labels))
                sup.append(supernet_step(supernet, arch, ids, mask, labels))
        ratios = [s / a for s, a in zip(sup, alone)]
        rows.append({"part": "train_step", "preset": preset, "arch": text, "supernet_ms": 1e3 * median(sup),
                     "standalone_ms": 1e3 * median(alone), "ratio": median(ratios), "steps": steps})
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
    args = parser(__doc__).parse_args()
    started = time.time()
    torch.set_num_threads(1)
    steps = 4 if args.quick else 10
    batch = (8, 128)
    archs = {p: (a[:3] if args.quick else a) for p, a in TABLE4.items()}
    plain = PLAIN[:4] if args.quick else PLAIN
    repeats = 10 if args.quick else 30

    print(f"(a) training step, batch {batch[0]}x{batch[1]}, 1 thread, {steps} interleaved steps per arch")
    train_rows = []
    for preset, names in archs.items():
        train_rows += train_step_rows(preset, names, steps, batch)
    print_table(train_rows, ["preset", "arch", "supernet_ms", "standalone_ms", "ratio"], title="(a) training step")

    print(f"\n(b) inference, batch 1 x 128, 1 thread, {repeats} interleaved repeats per arch")
    inf_rows = inference_rows(plain, repeats, 128)
    print_table(inf_rows, ["arch", "ours_ms", "hf_bert_ms", "ratio"], title="(b) inference vs stock BertModel")

    summary = {
        "train_step_ratio_median": round(median([r["ratio"] for r in train_rows]), 4),
        "train_step_ratio_max": round(max(r["ratio"] for r in train_rows), 4),
        "train_step_ratio_median_mlm": round(median([r["ratio"] for r in train_rows if r["preset"] == "mlm"]), 4),
        "train_step_ratio_median_kd": round(median([r["ratio"] for r in train_rows if r["preset"] == "kd"]), 4),
        "inference_ratio_vs_hf_median": round(median([r["ratio"] for r in inf_rows]), 4),
        "inference_ratio_vs_hf_max": round(max(r["ratio"] for r in inf_rows), 4),
    }
    print_summary(summary)
    write_result(args.out, "supernet_overhead", summary, train_rows + inf_rows,
                 {"quick": args.quick, "threads": 1, "train_batch": list(batch), "train_steps": steps,
                  "inference_repeats": repeats, "vocab_size": VOCAB, "mlm_fraction": 0.15}, started)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
