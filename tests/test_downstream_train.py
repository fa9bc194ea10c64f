"""End-to-end fine-tuning on tiny models and tiny files: learning, outputs, reproducibility, suites, budget, CLI."""

import json

import numpy as np
import pytest
import torch

from autotinybert import (Arch, AutoTinyBertConfig, AutoTinyBertForMaskedLM, SearchSpace, SuperBertConfig,
                          SuperBertForMaskedLM)
from autotinybert.cli import main as cli_main
from autotinybert.downstream import Budget, evaluate_suite, finetune, score_supernet_arch
from autotinybert.errors import UserError

NEUTRAL = "the a movie film plot was is it this that very quite story actors".split()
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "paris", "rome", "where", "city", "?", "."] + NEUTRAL
FAST = dict(learning_rate=3e-3, epochs=4, batch_size=16, warmup_ratio=0.1, progress=False, threads=1)


def make_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny AutoTinyBert folder (MLM head, like `autotinybert extract` writes), a plain BERT folder and data."""
    root = tmp_path_factory.mktemp("downstream")
    tok = make_tokenizer()
    torch.manual_seed(0)  # builds fixtures only; the code under test never touches the global RNG
    cfg = AutoTinyBertConfig.from_arch("2-32-64-2-32", vocab_size=len(WORDS), max_position_embeddings=64)
    AutoTinyBertForMaskedLM(cfg).save_pretrained(root / "atb")
    tok.save_pretrained(root / "atb")
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    rng = np.random.default_rng(0)
    data = root / "data"

    def sentence(word):
        words = list(rng.choice(NEUTRAL, size=rng.integers(3, 7)))
        words.insert(int(rng.integers(0, len(words) + 1)), word)
        return " ".join(words)

    for split, n in (("train", 192), ("dev", 64)):
        labels = rng.integers(0, 2, size=n)
        rows = "".join(f"{sentence('good' if y else 'bad')} \t{y}\n" for y in labels)
        (data / "SST-2").mkdir(parents=True, exist_ok=True)
        (data / "SST-2" / f"{split}.tsv").write_text("sentence\tlabel\n" + rows)
        header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        rows = []
        for i in range(n):
            k = int(rng.integers(0, 3))  # score = number of 'good' in sentence 2 (0..2) +1
            rows.append(f"{i}\tg\tf\ty\to\ts\ts\t{sentence('good')}\t{sentence(' '.join(['good'] * k) or 'bad')}\t{k + 1.0}\n")
        (data / "STS-B").mkdir(exist_ok=True)
        (data / "STS-B" / f"{split}.tsv").write_text(header + "".join(rows))
    articles = []
    for a in range(10):
        paras = []
        for p in range(3):
            city = ["paris", "rome"][(a + p) % 2]
            ctx = f"{sentence('.')} {city} is the city . {sentence('.')}"
            paras.append({"context": ctx, "qas": [{"id": f"{a}-{p}", "question": "where is the city ?",
                                                   "answers": [{"text": city, "answer_start": ctx.index(city)}]}]})
        articles.append({"title": f"T{a}", "paragraphs": paras})
    (data / "squad").mkdir()
    (data / "squad" / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    return root


def test_finetune_learns_and_writes_a_reloadable_model(tiny, tmp_path):
    out = tmp_path / "run"
    r = finetune(tiny / "atb", "sst2", tiny / "data", out, FAST)
    assert r.task == "sst2" and r.main_metric == "accuracy" and r.model["arch"] == "2-32-64-2-32"
    assert r.best_score >= 0.9, r.history                         # 'good' vs 'bad' decides the label
    assert r.history[0].train_loss > r.history[-1].train_loss      # loss goes down
    assert r.steps == 4 * 12 and [h.step for h in r.history] == [12, 24, 36, 48]  # eval at every epoch end
    assert r.final_score == r.history[-1].score and r.best_score == max(h.score for h in r.history)
    saved = json.loads((out / "result.json").read_text())
    assert saved["best_score"] == r.best_score and saved["config"]["learning_rate"] == 3e-3
    assert json.loads((out / "config.json").read_text())["max_seq_length"] == 128  # Table D.1 default filled in
    assert len((out / "history.jsonl").read_text().splitlines()) == 4
    # OUT/model holds the final weights: reloaded with the Auto class, it reproduces the final dev accuracy.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(model).__name__ == "AutoTinyBertForSequenceClassification"
    assert model.config.id2label == {0: "0", 1: "1"}
    from autotinybert.downstream.data import load_task
    from autotinybert.downstream.features import encode_pairs, collate
    from autotinybert.downstream import get_task

    dev = load_task(get_task("sst2"), tiny / "data").dev["dev"]
    enc = encode_pairs(make_tokenizer(), dev, 128, False)
    with torch.no_grad():
        preds = model.eval()(**collate(enc.input_ids, enc.token_type_ids, 0)).logits.argmax(-1).numpy()
    assert float((preds == enc.labels).mean()) == pytest.approx(r.final_metrics["accuracy"])


def test_same_seed_same_run_and_global_rng_untouched(tiny):
    cfg = dict(FAST, epochs=1, eval_every=4)
    state = torch.get_rng_state()
    a = finetune(tiny / "atb", "sst2", tiny / "data", None, dict(cfg, seed=1))
    assert torch.equal(torch.get_rng_state(), state)               # the caller's RNG stream is left alone
    b = finetune(tiny / "atb", "sst2", tiny / "data", None, dict(cfg, seed=1))
    c = finetune(tiny / "atb", "sst2", tiny / "data", None, dict(cfg, seed=2))
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert a.final_metrics == b.final_metrics
    assert [h.train_loss for h in a.history] != [h.train_loss for h in c.history]


def test_budget_caps_steps_and_subsamples(tiny):
    r = finetune(tiny / "atb", "sst2", tiny / "data", None,
                 dict(FAST, max_train_examples=50, max_steps=3, max_eval_examples=20))
    assert (r.train_examples, r.steps, r.eval_examples) == (50, 3, {"dev": 20})
    assert len(r.history) == 1 and r.best_score == r.final_score


def test_plain_bert_regression_and_best_model(tiny, tmp_path):
    """A stock `transformers` BERT folder works too; STS-B is a regression with Pearson/Spearman."""
    r = finetune(tiny / "bert", "stsb", tiny / "data", tmp_path / "stsb", dict(FAST, epochs=10, save_model="best"))
    assert r.model["class"] == "BertForSequenceClassification" and r.main_metric == "pearson_spearman"
    assert set(r.final_metrics) == {"pearson", "spearman", "pearson_spearman"}
    assert r.history[0].train_loss > r.history[-1].train_loss
    assert r.best_score > 0.5
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "stsb" / "model").num_labels == 1


def test_squad_article_split_end_to_end(tiny, tmp_path):
    r = finetune(tiny / "atb", "squad", tiny / "data", tmp_path / "squad",
                 dict(FAST, squad_article_split=0.8, max_seq_length=48, epochs=6, batch_size=8, save_model="none"))
    assert r.main_metric == "f1" and set(r.final_metrics) == {"exact_match", "f1"}
    assert (r.train_examples, r.eval_examples) == (24, {"dev": 6})
    assert "split by article" in r.data["note"]
    assert r.history[0].train_loss > r.history[-1].train_loss
    assert not (tmp_path / "squad" / "model").exists()
    assert "split by article" in json.loads((tmp_path / "squad" / "result.json").read_text())["data"]["note"]


def test_errors_come_before_training(tiny, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        finetune(tiny / "atb", "sst2", tiny / "data", tmp_path / "busy", FAST)
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match=r"unknown key 'lr'; did you mean 'learning_rate'"):
        finetune(tiny / "atb", "sst2", tiny / "data", None, {"lr": 1})
    with pytest.raises(UserError, match="unknown task"):
        finetune(tiny / "atb", "sst5", tiny / "data", None, FAST)
    with pytest.raises(UserError, match="no MRPC files"):
        finetune(tiny / "atb", "mrpc", tiny / "data", None, FAST)
    with pytest.raises(UserError, match="has no config.json"):
        finetune(tmp_path, "sst2", tiny / "data", None, FAST)
    with pytest.raises(UserError, match="missing data file .*train-v1.1.json"):
        finetune(tiny / "atb", "squad", tiny / "data", None, FAST)


def test_suite_aggregates_and_resumes(tiny, tmp_path):
    cfg = dict(FAST, epochs=1)
    suite = evaluate_suite(tiny / "atb", "sst2,stsb", tiny / "data", tmp_path / "suite", cfg,
                           task_configs={"sst2": {"epochs": 2}})
    assert list(suite.tasks) == ["sst2", "stsb"] and not any(t.resumed for t in suite.tasks.values())
    assert suite.score == pytest.approx((suite.tasks["sst2"].best + suite.tasks["stsb"].best) / 2)
    assert suite.avg == pytest.approx(suite.score)
    assert json.loads((tmp_path / "suite" / "sst2" / "result.json").read_text())["steps"] == 24
    again = evaluate_suite(tiny / "atb", "sst2,stsb", tiny / "data", tmp_path / "suite", cfg)
    assert all(t.resumed for t in again.tasks.values()) and again.score == suite.score
    row = again.table_row()
    assert list(row)[1:] == ["SST-2", "STS-B", "Score", "Avg"] and row["Score"] == f"{100 * suite.score:.1f}"
    with pytest.raises(UserError, match="not in this suite"):
        evaluate_suite(tiny / "atb", "sst2", tiny / "data", None, cfg, task_configs={"rte": {}})


def test_jobs_in_two_processes_equal_the_sequential_suite(tiny, tmp_path):
    from autotinybert.downstream.suite import run_jobs, suite_jobs

    cfg = dict(FAST, epochs=1)
    sequential = evaluate_suite(tiny / "atb", "sst2,stsb", tiny / "data", tmp_path / "one", cfg,
                                task_configs={"sst2": {"epochs": 2}})
    jobs = suite_jobs(tiny / "atb", "sst2,stsb", tiny / "data", tmp_path / "two", cfg,
                      task_configs={"sst2": {"epochs": 2}})
    (tmp_path / "two" / "stsb").mkdir(parents=True)
    (tmp_path / "two" / "stsb" / "config.json").write_text("{}")  # a job killed half-way: restarted, not skipped
    lines = []
    run_jobs(jobs, workers=2, log=lines.append)
    assert len(lines) == 2 and all(job.finished for job in jobs)
    parallel = evaluate_suite(tiny / "atb", "sst2,stsb", tiny / "data", tmp_path / "two", cfg,
                              task_configs={"sst2": {"epochs": 2}})
    assert all(t.resumed for t in parallel.tasks.values())
    for task in ("sst2", "stsb"):  # the same fine-tune, bit for bit
        assert parallel.tasks[task].final_metrics == sequential.tasks[task].final_metrics
    run_jobs(jobs, workers=2, log=lines.append)  # all finished: nothing runs
    assert len(lines) == 2
    with pytest.raises(UserError, match="workers must be an integer >= 1"):
        run_jobs(jobs, workers=0)


def test_score_supernet_arch(tiny):
    space = SearchSpace.from_dict({"name": "tiny", "attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16],
                                   "ffn": [32, 64, 32], "heads": [1, 2], "head_size": 16})
    torch.manual_seed(0)
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=space, vocab_size=len(WORDS), max_position_embeddings=64))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    budget = Budget(max_train_examples=96, max_steps=12, max_eval_examples=32, learning_rate=3e-3, batch_size=16,
                    squad_max_seq_length=48)
    scores = score_supernet_arch(supernet, Arch.parse("2-32-64-2-32"), "sst2,squad", tiny / "data", make_tokenizer(),
                                 budget, seed=0)
    assert set(scores) == {"sst2", "squad"} and all(0.0 <= v <= 1.0 for v in scores.values())
    again = score_supernet_arch(supernet, "2-32-64-2-32", ["sst2"], tiny / "data", tiny / "atb", budget, seed=0)
    assert again["sst2"] == scores["sst2"]                          # deterministic for a seed
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())  # supernet untouched
    with pytest.raises(UserError, match="unknown budget setting"):
        Budget.from_dict({"steps": 3})


def test_cli_finetune_and_evaluate(tiny, tmp_path, capsys):
    common = [f"data={tiny / 'data'}", "learning_rate=3e-3", "epochs=1", "batch_size=16", "threads=1",
              "progress=false"]
    assert cli_main(["finetune", f"model={tiny / 'atb'}", "task=sst2", f"out={tmp_path / 'ft'}",
                     "save_model=none", *common]) == 0
    assert "sst2: accuracy best" in capsys.readouterr().out
    assert json.loads((tmp_path / "ft" / "result.json").read_text())["config"]["epochs"] == 1
    assert cli_main(["evaluate", f"model={tiny / 'atb'}", "tasks=sst2,stsb", f"out={tmp_path / 'ev'}",
                     *common]) == 0
    out = capsys.readouterr().out
    assert "[best dev score] SST-2" in out and "Score" in out and (tmp_path / "ev" / "suite.json").is_file()
    assert cli_main(["finetune", f"model={tiny / 'atb'}", "task=nope", f"out={tmp_path / 'x'}",
                     *common]) == 2
    assert "error: unknown task 'nope'" in capsys.readouterr().err
    assert cli_main(["finetune", f"model={tiny / 'atb'}", "task=sst2", f"out={tmp_path / 'y'}",
                     "bogus=1", *common]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err


def test_mnli_reports_matched_and_mismatched(tiny, tmp_path):
    header = ("index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n")
    labels = ["contradiction", "entailment", "neutral"]
    folder = tmp_path / "MNLI"
    folder.mkdir()
    for name, n in (("train", 32), ("dev_matched", 12), ("dev_mismatched", 9)):
        rows = "".join(f"{i}\t1\t1n\tg\t()\t()\t()\t()\tthe movie\tgood plot\t{labels[i % 3]}\t{labels[i % 3]}\n"
                       for i in range(n))
        (folder / f"{name}.tsv").write_text(header + rows)
    r = finetune(tiny / "atb", "mnli", tmp_path, None, dict(FAST, max_steps=2))
    assert r.eval_examples == {"dev_matched": 12, "dev_mismatched": 9}
    m = r.final_metrics
    assert set(m) == {"accuracy", "matched_accuracy", "mismatched_accuracy"}
    assert m["accuracy"] == m["matched_accuracy"]
    # identical inputs -> one predicted class; dev_matched has 4 of each class, dev_mismatched 3 of each
    assert m["matched_accuracy"] == pytest.approx(1 / 3) and m["mismatched_accuracy"] == pytest.approx(1 / 3)
