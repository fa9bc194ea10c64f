"""GLUE / SQuAD readers on small files written here in the exact formats, plus the task registry's errors."""

import json
from pathlib import Path

import pytest

from autotinybert.downstream import (TASKS, TaskError, get_task, load_task, parse_tasks, read_glue_file,
                                     read_squad_file, split_by_article)
from autotinybert.downstream.config import FinetuneConfig
from autotinybert.downstream.hf_datasets import map_glue_rows, map_squad_rows
from autotinybert.errors import UserError

REAL = Path(__file__).resolve().parents[2] / "shared" / "data"


def write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# One dev file per task, in the layout of the official GLUE download (header, column order).
GLUE_FILES = {
    "cola": ("CoLA", "gj04\t1\t\tThe sailors rode the breeze.\nclc95\t0\t*\tHe sang loud the song.", 2,
             ("The sailors rode the breeze.", None, 1)),
    "sst2": ("SST-2", "sentence\tlabel\nit 's a charming journey . \t1\nbleak \t0\n", 2, ("it 's a charming journey . ", None, 1)),
    "mrpc": ("MRPC", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said \"no.\tHe said no.\n"
                     "0\t3\t4\tA b.\tC d.\n", 2, ('He said "no.', "He said no.", 1)),
    "stsb": ("STS-B", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                      "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA man dances.\t3.800\n", 1,
             ("A man.", "A man dances.", 3.8)),
    "qqp": ("QQP", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n5\t1\t2\tWhy?\tHow?\t0\n", 1, ("Why?", "How?", 0)),
    "qnli": ("QNLI", "index\tquestion\tsentence\tlabel\n0\tWhat came?\t\"As of that day.\tnot_entailment\n", 1,
             ("What came?", '"As of that day.', 1)),
    "rte": ("RTE", "index\tsentence1\tsentence2\tlabel\n0\tDana died.\tReeve fell.\tentailment\n", 1,
            ("Dana died.", "Reeve fell.", 0)),
    "wnli": ("WNLI", "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged.\tIt is.\t1\n", 1,
             ("The drain is clogged.", "It is.", 1)),
}

MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n")


def mnli_row(i, a, b, gold):
    return f"{i}\t1\t1n\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\t{a}\t{b}\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}\t{gold}\n"


@pytest.mark.parametrize("task", sorted(GLUE_FILES))
def test_every_glue_layout(tmp_path, task):
    folder, text, count, (a, b, label) = GLUE_FILES[task]
    path = write(tmp_path / folder / "dev.tsv", text, bom=(task == "mrpc"))
    examples = read_glue_file(get_task(task), path, "dev")
    assert len(examples) == count
    first = examples[0]
    assert (first.text_a, first.text_b, first.label) == (a, b, label)


def test_cola_has_no_header_and_no_final_newline(tmp_path):
    path = write(tmp_path / "dev.tsv", "a\t1\t\tFirst.\nb\t0\t*\tSecond.")
    examples = read_glue_file(get_task("cola"), path, "dev")
    assert [e.text_a for e in examples] == ["First.", "Second."]  # the first line is data, not a header
    assert [e.label for e in examples] == [1, 0]


def test_mnli_two_dev_files_and_label_order(tmp_path):
    write(tmp_path / "MNLI" / "train.tsv", MNLI_HEADER.replace("\tlabel2\tlabel3\tlabel4\tlabel5", "")
          + "0\t1\t1n\tfiction\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tP.\tH.\tneutral\tneutral\n")
    write(tmp_path / "MNLI" / "dev_matched.tsv", MNLI_HEADER + mnli_row(0, "P1.", "H1.", "entailment")
          + mnli_row(1, "P2.", "H2.", "contradiction"))
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", MNLI_HEADER + mnli_row(0, "Q.", "K.", "neutral"))
    data = load_task(get_task("mnli"), tmp_path)
    assert set(data.dev) == {"dev_matched", "dev_mismatched"}
    assert [e.label for e in data.dev["dev_matched"]] == [1, 0]  # contradiction, entailment, neutral
    assert data.dev["dev_mismatched"][0].label == 2
    assert (data.train[0].text_a, data.train[0].text_b, data.train[0].label) == ("P.", "H.", 2)


def test_bom_is_dropped_from_the_header_and_no_quote_processing(tmp_path):
    path = write(tmp_path / "dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                 '1\t1\t2\t"Quoted\tstart" and tab\n', bom=True)
    (ex,) = read_glue_file(get_task("mrpc"), path, "dev")
    assert ex.text_a == '"Quoted' and ex.text_b == 'start" and tab'


def test_malformed_row_reports_file_and_line(tmp_path):
    path = write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two\n")
    with pytest.raises(TaskError, match=r"dev\.tsv:3: malformed row: 2 tab-separated fields, expected 4"):
        read_glue_file(get_task("rte"), path, "dev")


def test_label_outside_label_set(tmp_path):
    path = write(tmp_path / "dev.tsv", "sentence\tlabel\nfine .\t1\nodd .\t2\n")
    with pytest.raises(TaskError, match=r"dev\.tsv:3: label '2' is not one of sst2's labels \['0', '1'\]"):
        read_glue_file(get_task("sst2"), path, "dev")


def test_regression_label_must_be_a_number(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    path = write(tmp_path / "dev.tsv", header + "0\tg\tf\ty\to\ts\ts\tA.\tB.\tfive\n")
    with pytest.raises(TaskError, match=r"dev\.tsv:2: score 'five' is not a number"):
        read_glue_file(get_task("stsb"), path, "dev")


def test_unknown_task_and_missing_files(tmp_path):
    with pytest.raises(TaskError, match="unknown task 'sst3'; choose one of cola, sst2"):
        get_task("sst3")
    assert get_task("SST-2").name == "sst2" and get_task("sts-b").name == "stsb"
    with pytest.raises(TaskError, match="no SST-2 files under"):
        load_task(get_task("sst2"), tmp_path)
    write(tmp_path / "SST-2" / "dev.tsv", "sentence\tlabel\nok .\t1\n")
    with pytest.raises(TaskError, match=r"missing data file .*SST-2/train\.tsv"):
        load_task(get_task("sst2"), tmp_path)
    with pytest.raises(TaskError, match="does not exist"):
        load_task(get_task("sst2"), tmp_path / "nope")
    assert [s.name for s in parse_tasks("glue")] == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert [s.name for s in parse_tasks("sst2, mrpc,sst2")] == ["sst2", "mrpc"]


def test_registry_has_table_d1_defaults():
    assert len(TASKS) == 10
    expect = {"squad": (3e-5, 4, 16), "sst2": (2e-5, 4, 32), "mnli": (3e-5, 4, 32), "mrpc": (2e-5, 10, 32),
              "cola": (1e-5, 10, 32), "qnli": (2e-5, 10, 32), "qqp": (2e-5, 5, 32), "stsb": (3e-5, 10, 32),
              "rte": (2e-5, 10, 32)}
    for name, (lr, epochs, batch) in expect.items():
        resolved = FinetuneConfig().resolve(get_task(name))
        assert (resolved.learning_rate, resolved.epochs, resolved.batch_size) == (lr, epochs, batch)
    assert FinetuneConfig(epochs=2).resolve(get_task("mrpc")).epochs == 2


def test_config_from_dict_errors():
    assert FinetuneConfig.from_dict({"learning_rate": 1e-4}).learning_rate == 1e-4
    with pytest.raises(UserError, match=r"unknown key 'lr'; did you mean 'learning_rate'"):
        FinetuneConfig.from_dict({"lr": 1e-4})
    with pytest.raises(UserError, match="batch_size: input should be greater than 0"):
        FinetuneConfig.from_dict({"batch_size": 0})
    with pytest.raises(UserError, match="squad_article_split: input should be less than 1"):
        FinetuneConfig.from_dict({"squad_article_split": 1.5})


def squad_json(articles):
    return json.dumps({"version": "1.1", "data": [
        {"title": title, "paragraphs": [{"context": ctx, "qas": [
            {"id": f"{title}-{i}", "question": q, "answers": [{"text": a, "answer_start": ctx.index(a)}]}
            for i, (q, a) in enumerate(qas)]}]} for title, ctx, qas in articles]})


def test_squad_reader_and_article_split(tmp_path):
    articles = [(f"T{k}", f"Paris is the capital of France {k}.", [("What is the capital?", "Paris"),
                                                                   ("Of what?", "France")]) for k in range(10)]
    path = write(tmp_path / "squad" / "dev-v1.1.json", squad_json(articles), bom=True)
    examples = read_squad_file(path)
    assert len(examples) == 20 and examples[1].answers == ("France",) and examples[1].answer_starts == (24,)
    train, held, note = split_by_article(examples, 0.8, seed=0)
    assert len(train) == 16 and len(held) == 4
    assert not {e.title for e in train} & {e.title for e in held}  # no article on both sides
    assert split_by_article(examples, 0.8, seed=0)[0] == train  # deterministic
    assert "8 articles / 16 questions for training" in note
    data = load_task(get_task("squad"), tmp_path, squad_article_split=0.8)
    assert len(data.train) == 16 and "split by article" in data.note
    with pytest.raises(TaskError, match=r"missing data file .*train-v1\.1\.json"):
        load_task(get_task("squad"), tmp_path)


def test_squad_reader_errors(tmp_path):
    with pytest.raises(TaskError, match=r"bad\.json:1: not valid JSON"):
        read_squad_file(write(tmp_path / "bad.json", "{nope"))
    with pytest.raises(TaskError, match="not a SQuAD file"):
        read_squad_file(write(tmp_path / "list.json", "[1, 2]"))
    with pytest.raises(TaskError, match="paragraph 0: missing or bad field 'qas'"):
        read_squad_file(write(tmp_path / "noqas.json", json.dumps({"data": [{"title": "t", "paragraphs": [
            {"context": "x"}]}]})))


def test_hf_rows_are_mapped_to_our_labels():
    # The hub's MNLI order is entailment, neutral, contradiction; ours (the TSV files') is sorted.
    rows = [{"premise": "P.", "hypothesis": "H.", "label": 2}, {"premise": "Q.", "hypothesis": "K.", "label": 0}]
    ex = map_glue_rows(get_task("mnli"), rows, ["entailment", "neutral", "contradiction"], "dev")
    assert [e.label for e in ex] == [0, 1] and ex[0].text_a == "P."
    sst = map_glue_rows(get_task("sst2"), [{"sentence": "ok", "label": 1}], ["negative", "positive"], "dev")
    assert sst[0].label == 1
    with pytest.raises(TaskError, match="no label"):
        map_glue_rows(get_task("rte"), [{"sentence1": "a", "sentence2": "b", "label": -1}], None, "test")
    (sq,) = map_squad_rows([{"id": "q1", "title": "T", "question": "Q?", "context": "C is here.",
                             "answers": {"text": ["C"], "answer_start": [0]}}])
    assert sq.answers == ("C",) and sq.answer_starts == (0,)


@pytest.mark.skipif(not (REAL / "glue").is_dir(), reason="real GLUE data not present")
def test_real_files_counts():
    """The shared copies have the counts their README verifies."""
    counts = {"sst2": (67349, 872), "mrpc": (3668, 408), "rte": (2490, 277), "cola": (8551, 1043),
              "stsb": (5749, 1500), "wnli": (635, 71)}
    for name, (n_train, n_dev) in counts.items():
        data = load_task(get_task(name), REAL)
        assert (len(data.train), len(data.dev["dev"])) == (n_train, n_dev), name
    assert len(load_task(get_task("qnli"), REAL, need_train=False).dev["dev"]) == 5463
    assert len(read_squad_file(REAL / "squad" / "dev-v1.1.json")) == 10570


def test_config_from_yaml_file(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("learning_rate: 5.0e-5\nmax_train_examples: 100\n")
    cfg = FinetuneConfig.load(path)
    assert (cfg.learning_rate, cfg.max_train_examples, cfg.epochs) == (5e-5, 100, None)
    assert cfg.replace(epochs=2).epochs == 2 and cfg.replace(epochs=2).seed == 0 and cfg.epochs is None
    path.write_text("learning_rate: 1e-4\n")  # YAML 1.1 reads this as a string
    assert FinetuneConfig.load(path).learning_rate == 1e-4
    path.write_text("learning_rate: 1e-4\nwarmup: 0.1\n")
    with pytest.raises(UserError, match=r"unknown key 'warmup'; did you mean 'warmup_ratio'"):
        FinetuneConfig.load(path)
    with pytest.raises(UserError, match="does not exist"):
        FinetuneConfig.load(tmp_path / "none.yaml")


def test_hf_selector_is_exact(tmp_path):
    from autotinybert.downstream.data import is_hf

    assert is_hf("hf") and is_hf("hf:nyu-mll/glue") and not is_hf(tmp_path / "hfdata") and not is_hf("hfdata")
