"""ONNX export of every head (fp32 parity, dynamic axes), the INT8 file, the latency backends, and model cards."""

import json

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from autotinybert import AutoTinyBertConfig  # noqa: E402
from autotinybert.export import (HEAD_OUTPUTS, example_inputs, export_folder, needs_reduced_range,  # noqa: E402
                                 ort_session, session_feed)
from autotinybert.modeling import (AutoTinyBertForMaskedLM, AutoTinyBertForQuestionAnswering,  # noqa: E402
                                   AutoTinyBertForSequenceClassification, AutoTinyBertModel)

HEADS = {"mlm": AutoTinyBertForMaskedLM, "sequence-classification": AutoTinyBertForSequenceClassification,
         "question-answering": AutoTinyBertForQuestionAnswering, "base": AutoTinyBertModel}
VOCAB = 97


def tiny_folder(root, head, arch="2-32-64-2-16"):
    """A save_pretrained folder of `head` with seeded weights (qkv != hidden, as AutoTinyBERT archs allow)."""
    torch.manual_seed(0)  # builds the fixture only; the code under test never touches the global RNG
    cfg = AutoTinyBertConfig.from_arch(arch, vocab_size=VOCAB, max_position_embeddings=64, num_labels=3)
    model = HEADS[head](cfg).eval()
    folder = root / head
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    out = {}
    for head in HEADS:
        folder, model = tiny_folder(root, head)
        out[head] = (folder, model, export_folder(folder, quantize="int8" if head != "base" else None))
    return out


@pytest.mark.parametrize("head", list(HEADS))
def test_each_head_exports_with_fp32_parity(exported, head):
    folder, model, result = exported[head]
    assert result.head == head
    assert (folder / "model.onnx").is_file()
    assert result.parity["max_abs_diff"] <= 1e-4
    assert [(s["batch"], s["seq_len"]) for s in result.parity["shapes"]] == [(1, 7), (3, 33)]
    record = json.loads((folder / "onnx.json").read_text())
    assert record["parity"]["max_abs_diff"] == result.parity["max_abs_diff"]
    session = ort_session(folder / "model.onnx")
    assert [o.name for o in session.get_outputs()] == list(HEAD_OUTPUTS[head])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]


@pytest.mark.parametrize("head", ["mlm", "sequence-classification", "question-answering"])
def test_dynamic_axes_two_batch_sizes_and_lengths(exported, head):
    folder, model, _ = exported[head]
    session = ort_session(folder / "model.onnx")
    for batch, length in ((2, 5), (4, 50)):
        feed = example_inputs(batch, length, VOCAB, seed=batch)
        got = session.run(None, session_feed(session, feed))
        with torch.inference_mode():
            ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=True)
        for name, value in zip(HEAD_OUTPUTS[head], got):
            assert value.shape == tuple(ref[name].shape)
            np.testing.assert_allclose(value, ref[name].numpy(), atol=1e-4)


@pytest.mark.parametrize("head", ["mlm", "sequence-classification", "question-answering"])
def test_int8_file_loads_and_runs(exported, head):
    folder, model, result = exported[head]
    assert result.int8 and (folder / "model_int8.onnx").is_file() and result.int8_runs
    assert result.reduce_range is needs_reduced_range()  # 7-bit weights exactly where the CPU's kernel saturates
    import onnx

    graph = onnx.load(str(folder / "model_int8.onnx")).graph
    assert any(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for n in graph.node)  # quantized
    session = ort_session(folder / "model_int8.onnx")
    feed = example_inputs(2, 20, VOCAB)
    out = session.run(None, session_feed(session, feed))
    with torch.inference_mode():
        ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=True)
    for name, value in zip(HEAD_OUTPUTS[head], out):
        assert value.shape == tuple(ref[name].shape) and np.isfinite(value).all()
        assert np.abs(value - ref[name].numpy()).max() < 0.1 * np.abs(ref[name].numpy()).max() + 1e-3  # close-ish


def test_reduced_range_exactly_on_x86_without_vnni():
    assert needs_reduced_range("x86_64", {"avx2", "fma"})  # AVX2 only: VPMADDUBSW sums int16 pairs, saturates
    assert needs_reduced_range("AMD64", {"avx512f", "avx512bw"})
    assert not needs_reduced_range("x86_64", {"avx2", "avx512f", "avx512_vnni"})
    assert not needs_reduced_range("x86_64", {"avx2", "avx_vnni"})
    assert not needs_reduced_range("aarch64", set())  # ARM accumulates int8 dot products in int32


def test_export_cli_and_errors(tmp_path, capsys):
    from autotinybert.cli import main
    from autotinybert.export import ExportError

    folder, _ = tiny_folder(tmp_path, "sequence-classification")
    assert main(["export", str(folder), "per_channel=false", "quantize=int8"]) == 0
    assert "model_int8.onnx" in capsys.readouterr().out
    record = json.loads((folder / "onnx.json").read_text())
    assert record["per_channel"] is False and record["reduce_range"] is needs_reduced_range()
    assert main(["export", str(folder), "quantize=int8", "reduce_range=true"]) == 0
    assert "7-bit" in capsys.readouterr().out
    assert json.loads((folder / "onnx.json").read_text())["reduce_range"] is True
    with pytest.raises(ExportError, match="no config.json"):
        export_folder(tmp_path / "nothing")
    assert main(["export", str(folder), "format=tflite"]) == 2


# ----- latency backends ------------------------------------------------------------------------------------------
def test_int8_backend_measures_and_records_its_backend():
    from autotinybert.latency import measure_latency

    records = measure_latency(["1-32-64-1-32"], backend="onnxruntime-int8", warmup=0, repeats=2, reference=False)
    assert records[0].backend == "onnxruntime-int8" and records[0].median_ms > 0


def test_predictor_of_one_backend_is_refused_for_another(tmp_path):
    from autotinybert.latency import DeviceMismatchError, fit_predictor
    from autotinybert.latency.measure import LatencyRecord
    from autotinybert.arch import Arch, BERT_BASE
    from autotinybert.search import run_search

    rng = np.random.default_rng(0)
    archs = [Arch(int(rng.integers(1, 5)), 128 + 16 * int(rng.integers(0, 9)), 128 + 32 * int(rng.integers(0, 29)),
                  h := int(rng.integers(1, 5)), 64 * h) for _ in range(40)]
    records = [LatencyRecord(a, 0.1 * a.layers * (a.hidden + a.ffn) / 100, 0.01, 3, backend="onnxruntime-int8",
                             clock="cpu") for a in dict.fromkeys(archs)]
    records.append(LatencyRecord(BERT_BASE, 90.0, 1.0, 3, backend="onnxruntime-int8", clock="cpu",
                                 is_reference=True))
    predictor = fit_predictor(records, kind="analytic")
    assert predictor.device["backend"] == "onnxruntime-int8"
    predictor.save(tmp_path / "p.json")
    predictor.check_device({"backend": "onnxruntime-int8"})
    with pytest.raises(DeviceMismatchError, match="backend"):
        predictor.check_device({"backend": "torch"})
    with pytest.raises(DeviceMismatchError, match="backend"):
        run_search({"space": "cpu-mlm", "speedup": 50.0, "predictor": str(tmp_path / "p.json"),
                    "backend": "onnxruntime", "progress": False}, evaluator=lambda a: 1.0)
    from autotinybert.cli import main

    assert main(["latency", "bench", "1-128-128-1-64", f"predictor={tmp_path / 'p.json'}", "backend=torch",
                 "clock=cpu"]) == 2


# ----- model cards -----------------------------------------------------------------------------------------------
def card_yaml(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---", 2)[1])
    return meta, text


def test_extracted_card(tmp_path):
    from autotinybert import SearchSpace, SuperBertConfig, SuperBertForMaskedLM
    from autotinybert.extract import extract, save_extracted

    torch.manual_seed(0)
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.load("cpu-mlm"), vocab_size=VOCAB))
    supernet.save_pretrained(tmp_path / "supernet")
    model = extract(supernet, "2-128-256-2-128")
    save_extracted(model, tmp_path / "small", tokenizer_dir=None)
    meta, text = card_yaml(tmp_path / "small")
    assert meta["library_name"] == "transformers" and "autotinybert" in meta["tags"]
    assert meta["autotinybert"]["arch"] == "2-128-256-2-128"
    assert meta["autotinybert"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert "AutoModelForMaskedLM.from_pretrained" in text and "import autotinybert" in text


def test_finetuned_card_numbers_match_result_json(tmp_path):
    from transformers import BertTokenizer

    from autotinybert.downstream import finetune
    from autotinybert.modelcard import CardInfo, latency_facts, write_card

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "the", "film", "was"]
    folder, model = tiny_folder(tmp_path, "mlm", arch="1-32-64-2-32")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.save_pretrained(folder)
    # the source folder's card says how it was found and its latency: the fine-tuned card inherits both
    write_card(folder, CardInfo.of_model(model, "further-trained", found={"search": "pareto", "seed": 3},
                                         latency=latency_facts(2.0, 80.0, {"backend": "onnxruntime-int8",
                                                                           "threads": 1, "batch": 1,
                                                                           "seq_len": 128}, "measured"),
                                         training={"steps": 7}))
    data = tmp_path / "data" / "SST-2"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("dev", 32)):
        labels = rng.integers(0, 2, n)
        (data / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(
            f"the film was {'good' if y else 'bad'}\t{y}\n" for y in labels))
    result = finetune(folder, "sst2", tmp_path / "data", tmp_path / "ft",
                      {"epochs": 1, "batch_size": 16, "progress": False, "threads": 1, "save_model": "best"})
    saved = json.loads((tmp_path / "ft" / "result.json").read_text())
    meta, text = card_yaml(tmp_path / "ft" / "model")
    results = meta["model-index"][0]["results"]
    by_metric = {r["metrics"][0]["type"]: r["metrics"][0]["value"] for r in results}
    assert by_metric == pytest.approx(saved["best_metrics"])
    assert results[0]["dataset"]["config"] == "sst2" and results[0]["task"]["type"] == "text-classification"
    facts = meta["autotinybert"]
    assert facts["kind"] == "fine-tuned" and facts["training"]["steps"] == saved["steps"] == result.steps
    assert facts["found"] == {"search": "pareto", "seed": 3}
    assert facts["latency"]["speedup"] == 40.0 and facts["latency"]["device"]["backend"] == "onnxruntime-int8"
    assert facts["history"][0]["steps"] == 7
    assert "onnxruntime-int8" in text and "AutoModelForSequenceClassification" in text
