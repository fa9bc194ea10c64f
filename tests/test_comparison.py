"""What makes the searched-vs-conventional comparison trustworthy (issue 12), without training: the GLUE score
leaves WNLI out, QQP files load as GLUE's processors load them, the conventional family covers the space's grid,
and the report's gap verdict uses the fine-tuning seeds' spread."""

import csv

import pytest

from autotinybert.downstream import get_task, load_task
from autotinybert.downstream.data import read_glue_rows
from autotinybert.downstream.suite import aggregate

QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"


def glue_qqp_processor(path) -> tuple[list[tuple[str, str, str]], int]:
    """transformers 4.x `QqpProcessor._create_examples` over `DataProcessor._read_tsv` (csv, tab, no quoting),
    verbatim in logic: skip the header; a row whose fields 3, 4 or 5 are missing is skipped (`except IndexError:
    continue`). Returns ((question1, question2, label) per example, rows skipped)."""
    with open(path, encoding="utf-8-sig") as f:
        lines = list(csv.reader(f, delimiter="\t", quotechar=None))
    examples, skipped = [], 0
    test_mode = len(lines[0]) == 3
    q1_index, q2_index = (1, 2) if test_mode else (3, 4)
    for i, line in enumerate(lines):
        if i == 0:
            continue
        try:
            examples.append((line[q1_index], line[q2_index], None if test_mode else line[5]))
        except IndexError:
            skipped += 1
    return examples, skipped


def write_qqp(folder):
    folder.mkdir(parents=True)
    train = [QQP_HEADER,
             "0\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1",
             "1\t3\t4\tWhy is the sky blue?",  # a question split over two lines in the original file
             "\tWhat makes the sky blue?\t0",
             "2\t5\t6\tIs tea healthy?\tIs coffee healthy?\t0",
             "3\t7\t8\tWhat is 2+2?\t\t0",  # an empty question is a field, not a missing one
             "4\t9"]
    dev = [QQP_HEADER, "5\t10\t11\tCan cats swim?\tDo cats like water?\t1", "6\t12"]
    (folder / "train.tsv").write_text("\n".join(train) + "\n")
    (folder / "dev.tsv").write_text("\n".join(dev) + "\n")


def test_qqp_rows_with_missing_fields_are_skipped_and_counted_as_glue_does(tmp_path):
    write_qqp(tmp_path / "QQP")
    spec = get_task("qqp")
    data = load_task(spec, tmp_path)
    for split, ours in (("train", data.train), ("dev", data.dev["dev"])):
        theirs, skipped = glue_qqp_processor(tmp_path / "QQP" / f"{split}.tsv")
        assert [(e.text_a, e.text_b, spec.labels[e.label]) for e in ours] == theirs
        assert data.skipped[split] == skipped
    assert data.skipped == {"train": 3, "dev": 1}
    assert "QQP: skipped rows with missing fields, as GLUE's QqpProcessor does: train 3 (lines 3, 4, 7); " \
           "dev 1 (line 3)" == data.note
    assert read_glue_rows(spec, tmp_path / "QQP" / "dev.tsv", "dev").skipped_lines == (3,)


def test_other_tasks_still_refuse_a_short_row(tmp_path):
    from autotinybert.downstream import TaskError

    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\n")
    with pytest.raises(TaskError, match="dev.tsv:2: malformed row"):
        read_glue_rows(get_task("rte"), tmp_path / "RTE" / "dev.tsv", "dev")


def test_a_skipped_row_note_reaches_the_fine_tuning_result(tmp_path):
    """The count reaches result.json (data.note), which the pipeline's report prints under 'Data notes'."""
    from autotinybert.pipeline.report import data_note_lines

    write_qqp(tmp_path / "QQP")
    note = load_task(get_task("qqp"), tmp_path).note
    models = [{"tasks": {"qqp": {"note": note}}}]
    assert data_note_lines(models) == [f"- qqp: {note}"]


def test_wnli_is_not_in_the_score():
    score, avg = aggregate({"sst2": 0.9, "rte": 0.7, "wnli": 0.1, "squad": 0.5})
    assert score == pytest.approx(0.8) and avg == pytest.approx(0.7)
    assert aggregate({"wnli": 0.5}) == (None, None)  # WNLI alone: nothing to average


def test_conventional_family_is_the_rule_on_the_spaces_finest_grid():
    from autotinybert.pipeline.steps import conventional_candidates, conventional_family
    from autotinybert.space import SearchSpace

    space = SearchSpace.preset("cpu-kd")
    family = conventional_family(space, 64)
    assert len(family) == space.layers.count * space.hidden.count  # every (layers, hidden) of the grid
    assert set(conventional_candidates(space, 64)) <= set(family)  # the exact rule where the grid allows it
    for arch in family:
        assert space.contains(arch) and arch.heads == 12
        assert abs(arch.ffn - 4 * arch.hidden) <= space.ffn.step / 2 and abs(arch.qkv - arch.hidden) <= 6
    mlm = SearchSpace.preset("cpu-mlm")
    assert all(mlm.contains(a) and a.qkv == 64 * a.heads for a in conventional_family(mlm, 64))


def test_the_gap_verdict_uses_the_seed_spread():
    from autotinybert.pipeline.report import gap_verdict

    a = {"score": 0.80, "seed_scores": [0.79, 0.80, 0.81]}
    close = {"score": 0.795, "seed_scores": [0.78, 0.80, 0.805]}
    far = {"score": 0.70, "seed_scores": [0.69, 0.70, 0.71]}
    assert "not shown to be real" in gap_verdict(a, close)
    assert gap_verdict(a, far).endswith("+10.0 is beyond 2 SE: real")
    assert "one fine-tuning seed" in gap_verdict({"score": 0.8, "seed_scores": [0.8]}, far)
