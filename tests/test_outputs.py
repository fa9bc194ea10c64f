"""Outputs that protect inputs, on the real file system: an output that is, holds or sits inside an input is refused
with nothing touched (extract, train-model); an existing output folder or a symlink to one is written into, not
replaced; a failed write leaves no staging folder and the old contents in place; files and folders get the umask's
permissions; safetensors files are byte-identical for equal tensors; command-line paths are relative to the cwd."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from autotinybert.cli import main
from autotinybert.errors import UserError
from autotinybert.io import atomic_write_json, check_output, staged_dir

ARCH = "1-16-32-1-16"
SPACE = {"attention": "heads", "layers": [1, 2], "hidden": [16, 32, 16], "ffn": [32, 64, 32], "heads": [1, 2],
         "head_size": 16}
WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and '<dir>' for folders) under `root`: what 'untouched' means."""
    out = {}
    for p in sorted(root.rglob("*")):
        out[str(p.relative_to(root))] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """A supernet folder (with tokenizer) and a model extracted from it; a small corpus."""
    import numpy as np
    from transformers import BertTokenizerFast

    from autotinybert import SearchSpace, SuperBertConfig, SuperBertForMaskedLM, extract, save_extracted

    root = tmp_path_factory.mktemp("outputs")
    (root / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]) + "\n")
    BertTokenizerFast(vocab=str(root / "vocab.txt")).save_pretrained(root / "tok")
    torch.manual_seed(0)
    supernet = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict(SPACE, name="tiny"),
                                                    vocab_size=len(WORDS) + 6, max_position_embeddings=64))
    supernet.save_pretrained(root / "supernet", tokenizer_dir=root / "tok")
    (root / "supernet" / "metrics.jsonl").write_text('{"step": 1}\n')  # a run's other files must survive too
    save_extracted(extract(supernet, ARCH), root / "model", tokenizer_dir=root / "supernet")
    rng = np.random.default_rng(0)
    docs = ("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(4)) for _ in range(40))
    (root / "corpus.txt").write_text("\n\n".join(docs) + "\n")
    return root


# ---------------------------------------------------------------------------------------- inputs protected
@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_extract_into_its_own_supernet_is_refused_with_nothing_touched(folders, tmp_path, where, capsys):
    import shutil

    supernet = tmp_path / "supernet"
    shutil.copytree(folders / "supernet", supernet)
    out = {"same": supernet, "inside": supernet / "sub", "parent": tmp_path}[where]
    before = tree(tmp_path)
    code = main(["extract", f"supernet={supernet}", f"arch={ARCH}", f"out={out}", "overwrite=true"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "supernet" in err and "Traceback" not in err
    assert tree(tmp_path) == before


def test_train_model_into_its_own_model_folder_is_refused_with_nothing_touched(folders, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(folders / "model", model)
    before = tree(tmp_path)
    code = main(["train-model", f"model={model}", f"corpus={folders / 'corpus.txt'}", f"out={model}",
                 "overwrite=true", "max_steps=1", "progress=false", f"cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 2 and "is the input model=" in err and "Traceback" not in err
    assert tree(tmp_path) == before


def test_an_output_inside_the_corpus_folder_is_refused(folders, tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("text\n")
    with pytest.raises(UserError, match="is inside the input corpus"):
        check_output(tmp_path / "corpus" / "run", [("corpus", tmp_path / "corpus")])
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "corpus")  # a symlink to an input is that input
    with pytest.raises(UserError, match="is the input corpus"):
        check_output(link, [("corpus", tmp_path / "corpus")])


# ---------------------------------------------------------------------------------------- written into
def test_extract_writes_through_a_symlink_and_into_an_existing_folder(folders, tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (target / "old.txt").write_text("old\n")
    os.chmod(target, 0o751)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["extract", f"supernet={folders / 'supernet'}", f"arch={ARCH}", f"out={link}", "overwrite=true"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)  # the link stays, pointing where it did
    assert (target / "config.json").is_file() and (target / "model.safetensors").is_file()
    assert not (target / "old.txt").exists()  # overwrite: the old contents went
    assert stat.S_IMODE(target.stat().st_mode) == 0o751  # the folder kept its permissions (it was not replaced)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # an existing empty folder is filled in place (same inode)
    empty = tmp_path / "empty"
    empty.mkdir()
    inode = empty.stat().st_ino
    assert main(["extract", f"supernet={folders / 'supernet'}", f"arch={ARCH}", f"out={empty}"]) == 0
    assert empty.stat().st_ino == inode and (empty / "config.json").is_file()


def test_a_failed_write_leaves_the_old_contents_and_no_staging_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    with pytest.raises(RuntimeError):
        with staged_dir(out, overwrite=True) as stage:
            (stage / "new.txt").write_text("new\n")
            raise RuntimeError("the save failed")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with staged_dir(fresh) as stage:
            (stage / "x").write_text("x")
            raise RuntimeError
    assert not fresh.exists() and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_non_empty_output_is_refused_before_any_work_unless_overwrite(folders, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert main(["extract", f"supernet={folders / 'supernet'}", f"arch={ARCH}", f"out={out}"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine\n"


# ---------------------------------------------------------------------------------------- permissions
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_files_and_folders_get_the_umask_permissions(folders, tmp_path, umask):
    old = os.umask(umask)
    try:
        assert main(["extract", f"supernet={folders / 'supernet'}", f"arch={ARCH}", f"out={tmp_path / 'ex'}"]) == 0
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with staged_dir(tmp_path / "staged") as stage:
            (stage / "sub").mkdir()
            (stage / "sub" / "f.txt").write_text("x")
        assert main(["prepare-corpus", f"corpus={folders / 'corpus.txt'}", f"cache_dir={tmp_path / 'cache'}",
                     "tokenizer_vocab_size=100", "max_seq_length=16", "progress=false"]) == 0
        assert main(["train-model", f"model={folders / 'model'}", f"corpus={folders / 'corpus.txt'}",
                     f"out={tmp_path / 'trained'}", f"cache_dir={tmp_path / 'cache2'}", "max_seq_length=16",
                     "batch_size=2", "max_steps=1", "checkpoint_every=1", "threads=1", "progress=false"]) == 0
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    dirs = [tmp_path / "ex", tmp_path / "staged", *[p for p in tmp_path.rglob("*") if p.is_dir()]]
    assert len(files) > 10
    assert (tmp_path / "trained" / "model.safetensors") in files
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == \
           {str(p): oct(0o666 & ~umask) for p in files}
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in dirs} == {str(p): oct(0o777 & ~umask) for p in dirs}


# ---------------------------------------------------------------------------------------- stable bytes
def test_safetensors_files_are_byte_identical_across_processes(tmp_path):
    """The supernet's model.safetensors carries two metadata keys, which safetensors writes in a per-process hash
    order; the saved file must not depend on it."""
    import subprocess
    import sys

    script = ("import sys, torch\nfrom autotinybert import SearchSpace, SuperBertConfig, SuperBertForMaskedLM\n"
              "torch.manual_seed(0)\n"
              f"m = SuperBertForMaskedLM(SuperBertConfig(space=SearchSpace.from_dict({SPACE!r}), vocab_size=30, "
              "max_position_embeddings=16))\nm.save_pretrained(sys.argv[1])\n")
    digests = set()
    for i in range(3):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / str(i))], check=True)
        digests.add(hashlib.sha256((tmp_path / str(i) / "model.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1


# ---------------------------------------------------------------------------------------- paths on the command line
def test_command_line_paths_are_relative_to_the_cwd_and_file_paths_to_the_file(tmp_path, monkeypatch):
    """`run cfg.yaml out=relrun` puts the run under the cwd, not beside the config file; a path inside the file is
    relative to the file's folder."""
    from autotinybert.cli import commands, parse

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.txt").write_text("text\n")
    (tmp_path / "configs" / "run.yaml").write_text(yaml.safe_dump({"data": {"corpus": ["c.txt"],
                                                                            "downstream": "."}}))
    (tmp_path / "configs" / "SST-2").mkdir()
    (tmp_path / "configs" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    run = next(c for c in commands() if c.name == "run")
    cfg = parse(run, ["../configs/run.yaml", "out=relrun"])
    assert Path(cfg.out).resolve() == work / "relrun"
    assert Path(cfg.data.corpus[0]) == tmp_path / "configs" / "c.txt"
    report = next(c for c in commands() if c.name == "report")
    assert Path(parse(report, ["runs/x"]).run_dir).resolve() == work / "runs" / "x"  # positional too


def test_os_errors_name_the_path_and_the_fix():
    """A real ENOSPC (writing to /dev/full) and a real ENOTDIR, as the CLI prints them."""
    from autotinybert.io import describe_os_error

    with pytest.raises(OSError) as full:
        with open("/dev/full", "w") as handle:
            handle.write("x")
            handle.flush()
    full.value.filename = "/dev/full"  # the write itself names no file; the CLI's callers' errors do
    assert describe_os_error(full.value) == "/dev/full: No space left on device; the disk is full; free space or " \
                                            "choose another path"
    with pytest.raises(OSError) as notdir:
        os.mkdir("/dev/null/x")
    assert "a part of the path is a file, not a folder" in describe_os_error(notdir.value)
    with pytest.raises(UserError, match="not a regular file"):
        atomic_write_json("/dev/full", {})  # the rename would replace the device
    with pytest.raises(UserError, match="not a regular file"):
        check_output("/dev/null", folder=False)
