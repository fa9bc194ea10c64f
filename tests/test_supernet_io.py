"""Folders: supernet save/load, extraction round trips through transformers' Auto classes, plain-BERT export,
the CLI, and clear errors for missing or mismatched files (with nothing half-written)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer, BertTokenizerFast

import autotinybert
from autotinybert import (
    Arch,
    AutoTinyBertForMaskedLM,
    AutoTinyBertModel,
    SearchSpace,
    SuperBertConfig,
    SuperBertForMaskedLM,
    SupernetError,
    extract,
    save_extracted,
    to_plain_bert,
)
from autotinybert.cli import main as cli_main
from test_supernet_parity import batch, make_supernet

REPO = Path(__file__).resolve().parents[1]


def tokenizer_dir(tmp_path: Path) -> Path:
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(92)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    out = tmp_path / "tok"
    BertTokenizerFast(vocab=str(tmp_path / "vocab.txt")).save_pretrained(out)
    return out


@pytest.fixture
def supernet_dir(tmp_path):
    model = make_supernet("dims")
    out = tmp_path / "supernet"
    model.save_pretrained(out, tokenizer_dir=tokenizer_dir(tmp_path))
    return out


def test_transformers_recognises_a_supernet_folder(supernet_dir):
    """AutoTokenizer reads config.json to find the tokenizer class; the supernet's model type is registered, so
    the folder's tokenizer loads without an unknown-model-type error or warning."""
    from transformers import AutoConfig

    from autotinybert.modeling import SupernetFolderConfig

    assert isinstance(AutoConfig.from_pretrained(supernet_dir), SupernetFolderConfig)
    tok = AutoTokenizer.from_pretrained(supernet_dir)
    assert tok("hello")["input_ids"][0] == tok.cls_token_id


def test_supernet_round_trip(supernet_dir):
    original = make_supernet("dims")
    loaded = SuperBertForMaskedLM.from_pretrained(supernet_dir).eval()
    assert loaded.config.space == original.config.space
    ids, mask, types = batch()
    arch = Arch.parse("2-28-40-4-20")
    with torch.no_grad():
        a = original(ids, mask, types, arch=arch, return_logits=True).logits
        b = loaded(ids, mask, types, arch=arch, return_logits=True).logits
    assert torch.equal(a, b)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(supernet_dir))
    assert not [n for n in os.listdir(supernet_dir) if n.endswith(".tmp")]


def test_supernet_folder_errors(tmp_path, supernet_dir):
    with pytest.raises(SupernetError, match="does not exist"):
        SuperBertForMaskedLM.from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SupernetError, match="has no config.json"):
        SuperBertForMaskedLM.from_pretrained(empty)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((supernet_dir / "config.json").read_text())
    with pytest.raises(SupernetError, match="has no model.safetensors"):
        SuperBertForMaskedLM.from_pretrained(no_weights)

    (no_weights / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(SupernetError, match="not a readable safetensors file"):
        SuperBertForMaskedLM.from_pretrained(no_weights)

    (no_weights / "config.json").write_text("{not json")
    with pytest.raises(SupernetError, match="not valid JSON"):
        SuperBertForMaskedLM.from_pretrained(no_weights)

    # a config from another space: same keys, other shapes
    other = tmp_path / "other"
    make_supernet("heads").save_pretrained(other)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_text((other / "config.json").read_text())
    (mixed / "model.safetensors").write_bytes((supernet_dir / "model.safetensors").read_bytes())
    with pytest.raises(SupernetError, match="has shape .* but config.json"):
        SuperBertForMaskedLM.from_pretrained(mixed)

    # a weights file with a tensor missing
    state = load_file(supernet_dir / "model.safetensors")
    state.pop("cls.predictions.bias")
    save_file(state, mixed / "model.safetensors")
    (mixed / "config.json").write_text((supernet_dir / "config.json").read_text())
    with pytest.raises(SupernetError, match=r"missing \['cls.predictions.bias'\]"):
        SuperBertForMaskedLM.from_pretrained(mixed)

    # a Hugging Face model folder is not a supernet
    hf = tmp_path / "hf"
    extract(make_supernet("dims"), "1-16-8-4-8").save_pretrained(hf)
    with pytest.raises(SupernetError, match="expected 'autotinybert-supernet'"):
        SuperBertForMaskedLM.from_pretrained(hf)


def test_extracted_folder_loads_with_auto_classes(tmp_path, supernet_dir):
    supernet = SuperBertForMaskedLM.from_pretrained(supernet_dir).eval()
    arch = Arch.parse("3-32-48-4-24")
    model = extract(supernet, arch)
    out = save_extracted(model, tmp_path / "model", tokenizer_dir=supernet_dir)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "autotinybert" and config["qkv_size"] == 24
    ids, mask, types = batch()
    with torch.no_grad():
        expected = supernet(ids, mask, types, arch=arch, return_logits=True)
        mlm = AutoModelForMaskedLM.from_pretrained(out).eval()
        base = AutoModel.from_pretrained(out).eval()
        assert isinstance(mlm, AutoTinyBertForMaskedLM) and isinstance(base, AutoTinyBertModel)
        assert (mlm(ids, attention_mask=mask, token_type_ids=types).logits - expected.logits).abs().max() <= 1e-5
        hidden = base(ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        assert (hidden - expected.last_hidden_state).abs().max() <= 1e-5
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("w1 w2")["input_ids"] == [2, 6, 7, 3]


def test_save_extracted_never_clobbers(tmp_path):
    supernet = make_supernet("heads")
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    model = extract(supernet, "1-16-8-1-8")
    with pytest.raises(FileExistsError, match="not empty"):
        save_extracted(model, target)
    assert os.listdir(target) == ["keep.txt"]

    class Boom(RuntimeError):
        pass

    def failing_save(*args, **kwargs):
        raise Boom("disk full")

    model.save_pretrained = failing_save
    with pytest.raises(Boom):
        save_extracted(model, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no staging folder left behind


def test_plain_bert_export_loads_without_autotinybert(tmp_path):
    supernet = make_supernet("heads")
    arch = Arch.parse("2-24-40-3-24")  # qkv == hidden
    model = extract(supernet, arch)
    out = save_extracted(to_plain_bert(model), tmp_path / "bert")
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    ids, mask, types = batch()
    save_file({"ids": ids, "mask": mask, "types": types}, tmp_path / "inputs.safetensors")
    script = f"""
import sys, torch
from safetensors.torch import load_file, save_file
from transformers import BertForMaskedLM
x = load_file({str(tmp_path / 'inputs.safetensors')!r})
m = BertForMaskedLM.from_pretrained({str(out)!r}).eval()
with torch.no_grad():
    logits = m(x["ids"], attention_mask=x["mask"], token_type_ids=x["types"]).logits
assert "autotinybert" not in sys.modules
save_file({{"logits": logits.contiguous()}}, {str(tmp_path / 'logits.safetensors')!r})
"""
    # A clean interpreter that cannot import autotinybert at all.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-I", "-c", script], check=True, env=env, cwd=tmp_path)
    theirs = load_file(tmp_path / "logits.safetensors")["logits"]
    with torch.no_grad():
        ours = supernet(ids, mask, types, arch=arch, return_logits=True).logits
    assert (theirs - ours).abs().max() <= 1e-5

    with pytest.raises(ValueError, match="needs qkv == hidden"):
        to_plain_bert(extract(supernet, "2-24-40-2-16"))


def test_cli_space_and_extract(tmp_path, supernet_dir, capsys):
    assert cli_main(["space", "mlm"]) == 0
    assert "11,391,072 architectures" in capsys.readouterr().out
    assert cli_main(["space", "nope"]) == 2
    assert "unknown search space preset 'nope'" in capsys.readouterr().err

    out = tmp_path / "extracted"
    assert cli_main(["extract", f"supernet={supernet_dir}", "arch=2-24-40-4-16", f"out={out}"]) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(out))
    assert AutoModelForMaskedLM.from_pretrained(out).config.arch == Arch.parse("2-24-40-4-16")

    assert cli_main(["extract", f"supernet={supernet_dir}", "arch=2-24-40-4",
                     f"out={tmp_path / 'x'}"]) == 2
    assert "has 4 field(s)" in capsys.readouterr().err
    assert cli_main(["extract", f"supernet={supernet_dir}", "arch=2-24-40-4-20",
                     f"out={out}"]) == 2
    assert "not empty" in capsys.readouterr().err
    # 22 is inside the supernet's max arch but off the space's grid (step 4): refused unless asked for
    assert cli_main(["extract", f"supernet={supernet_dir}", "arch=2-22-40-4-16",
                     f"out={tmp_path / 'y'}"]) == 2
    assert "hidden=22 is not in 16..40 step 4" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "autotinybert", "space", "kd"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0 and "47,462,800 architectures" in result.stdout
