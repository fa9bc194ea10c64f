"""Data pipeline: corpus readers (plain, WikiExtractor, Gutenberg), WordPiece training, packing within documents,
the fingerprinted cache (reused / rebuilt), the deterministic validation split, BERT masking."""

from pathlib import Path

import numpy as np
import pytest
import torch

from autotinybert.data import (CorpusError, MaskingSpec, list_corpus_files, mask_tokens, prepare_corpus,
                               read_documents)
from autotinybert.data.corpus import detect_shape
from autotinybert.data.dataset import split_validation

WORDS = "the a cat dog sat ran on under mat table quickly slowly red blue big small house garden tree".split()


def write_corpus(path: Path, docs: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    text = "\n\n".join("\n".join(" ".join(rng.choice(WORDS, size=10)) + " ." for _ in range(5)) for _ in range(docs))
    path.write_text(text + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


# ----- readers ---------------------------------------------------------------------------------
def test_plain_text_documents_are_separated_by_blank_lines(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first line\nsecond line\n\n\nthird doc\n")
    assert list(read_documents(f)) == [["first line", "second line"], ["third doc"]]


def test_wikiextractor_tags_and_title_line_are_dropped(tmp_path):
    f = tmp_path / "wiki_00"
    f.write_text('<doc id="1" url="u" title="Cat">\nCat\n\nCats purr.\nThey sleep.\n</doc>\n'
                 '<doc id="2" url="u" title="Dog">\nDog\n\nDogs bark.\n</doc>\n')
    assert detect_shape(f.read_text()) == "wikiextractor"
    assert list(read_documents(f)) == [["Cats purr.", "They sleep."], ["Dogs bark."]]


def test_gutenberg_header_footer_crlf_and_wrapped_paragraphs(tmp_path):
    f = tmp_path / "book.txt"
    text = ("The Project Gutenberg EBook of X\r\n\r\nlicense words\r\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\n"
            "It was a dark\r\nand stormy night.\r\n\r\nThe end.\r\n\r\n"
            "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nmore license\r\n")
    f.write_bytes(text.encode())
    assert list(read_documents(f)) == [["It was a dark and stormy night.", "The end."]]


def test_missing_and_empty_corpus_errors(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        list_corpus_files(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(CorpusError, match="empty"):
        list_corpus_files(tmp_path / "empty.txt")
    (tmp_path / "dir").mkdir()
    with pytest.raises(CorpusError, match="no files"):
        list_corpus_files(tmp_path / "dir")
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(CorpusError, match="no text"):
        prepare_corpus(tmp_path / "blank.txt", None, cache_dir=tmp_path / "cache", tokenizer_vocab_size=100,
                       progress=False)


# ----- packing, cache, split -------------------------------------------------------------------
def test_packing_stays_inside_documents_and_cache_is_reused_then_invalidated(tmp_path):
    corpus = write_corpus(tmp_path / "c.txt", docs=30)
    kwargs = dict(max_seq_length=16, cache_dir=tmp_path / "cache", tokenizer_vocab_size=100, progress=False,
                  val_fraction=0.1)
    first = prepare_corpus(corpus, None, **kwargs)
    tok = first.tokenizer
    assert not first.stats["reused"] and first.train.shape[1] == 16
    rows = np.concatenate([first.train, first.validation])
    assert (rows[:, 0] == tok.cls_token_id).all()
    for row in rows:  # [CLS] body [SEP] then only padding
        sep = np.flatnonzero(row == tok.sep_token_id)
        assert len(sep) == 1 and (row[sep[0] + 1:] == tok.pad_token_id).all()
    # every document (5 sentences x 11 words) yields its own sequences: no sequence mixes two documents,
    # so the number of sequences is the sum over documents of ceil(tokens / 14)
    docs = list(read_documents(corpus))
    expected = sum(-(-len(tok.backend_tokenizer.encode(" ".join(d), add_special_tokens=False).ids) // 14) for d in docs)
    assert len(rows) == expected
    again = prepare_corpus(corpus, None, **kwargs)
    assert again.stats["reused"] and again.fingerprint == first.fingerprint
    np.testing.assert_array_equal(again.train, first.train)
    write_corpus(corpus, docs=31, seed=1)  # changed content (size, mtime) -> rebuilt
    changed = prepare_corpus(corpus, first.tokenizer_dir, **kwargs)
    assert not changed.stats["reused"] and changed.fingerprint != first.fingerprint
    other_length = prepare_corpus(corpus, first.tokenizer_dir, **{**kwargs, "max_seq_length": 24})
    assert other_length.fingerprint not in (first.fingerprint, changed.fingerprint)


def test_validation_split_is_whole_documents_and_order_independent():
    keys = np.array([5, 5, 9, 1, 1, 1, 7], dtype=np.uint64)
    mask = split_validation(keys, val_fraction=0.4, val_max_sequences=100)
    assert mask.tolist() == [False, False, False, True, True, True, False]  # doc with the smallest hash
    perm = np.array([6, 3, 0, 5, 2, 4, 1])
    assert split_validation(keys[perm], 0.4, 100).tolist() == mask[perm].tolist()
    assert split_validation(keys, 0.9, 2).sum() == 2  # capped


# ----- masking ---------------------------------------------------------------------------------
def test_masking_statistics_and_special_tokens_are_never_masked():
    spec = MaskingSpec(mask_token_id=4, vocab_size=500, special_ids=(0, 1, 2, 3, 4))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 500, (400, 128), generator=gen)
    ids[:, 0], ids[:, -1], ids[:, 100:] = 2, 3, 0  # [CLS] ... [SEP]-less tail of padding
    out = mask_tokens(ids, spec, torch.Generator().manual_seed(1))
    selected = out.labels != -100
    maskable = ids > 4
    assert not selected[~maskable].any()  # special tokens never selected
    assert (out.input_ids[~maskable] == ids[~maskable]).all()
    assert (out.labels[selected] == ids[selected]).all()
    rate = selected.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.005
    n = selected.sum().item()
    to_mask = (out.input_ids == 4) & selected
    unchanged = (out.input_ids == ids) & selected
    assert abs(to_mask.sum().item() / n - 0.8) < 0.01
    # kept = 10 % + random draws that hit the original id (1/495 of the random 10 %)
    assert abs(unchanged.sum().item() / n - 0.1) < 0.01
    assert ((out.input_ids != ids) & ~selected).sum() == 0


def test_masking_is_a_function_of_the_generator_seed():
    spec = MaskingSpec(mask_token_id=4, vocab_size=50, special_ids=(0, 1, 2, 3, 4))
    ids = torch.randint(5, 50, (8, 32), generator=torch.Generator().manual_seed(0))
    a = mask_tokens(ids, spec, torch.Generator().manual_seed(7))
    b = mask_tokens(ids, spec, torch.Generator().manual_seed(7))
    c = mask_tokens(ids, spec, torch.Generator().manual_seed(8))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.input_ids, b.input_ids)
    assert not torch.equal(a.labels, c.labels)


def test_real_corpus_shapes_are_read(tmp_path):
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
    if not data.is_dir():
        pytest.skip("shared corpus not available")
    wiki = next(p for p in sorted((data / "jason-feng_wikiVisual").rglob("wiki_*")) if p.is_file())
    book = next(p for p in sorted((data / "rcdm-uga_Gutenberg_Text").rglob("*.txt")))
    docs = list(read_documents(wiki))
    assert len(docs) > 1 and not any(p.startswith("<doc") or p == "</doc>" for d in docs for p in d)
    (book_doc,) = list(read_documents(book))
    assert not any("PROJECT GUTENBERG" in p.upper() and "***" in p for p in book_doc)


def test_padding_and_truncation_saved_in_a_tokenizer_do_not_leak_into_packing(tmp_path):
    """sentence-transformers folders save tokenizer.json with batch padding and truncation at 128 enabled."""
    import shutil

    from tokenizers import Tokenizer

    corpus = write_corpus(tmp_path / "c.txt", docs=20)
    kwargs = dict(max_seq_length=32, cache_dir=tmp_path / "cache", progress=False, val_fraction=0.1)
    plain = prepare_corpus(corpus, None, tokenizer_vocab_size=100, **kwargs)
    padded_dir = tmp_path / "padded_tok"
    shutil.copytree(plain.tokenizer_dir, padded_dir)
    tok = Tokenizer.from_file(str(padded_dir / "tokenizer.json"))
    tok.enable_padding(pad_id=plain.pad_token_id, pad_token="[PAD]")
    tok.enable_truncation(max_length=5)
    tok.save(str(padded_dir / "tokenizer.json"))
    padded = prepare_corpus(corpus, padded_dir, **kwargs)
    assert padded.fingerprint != plain.fingerprint
    np.testing.assert_array_equal(padded.train, plain.train)
    assert padded.stats["tokens"] == plain.stats["tokens"]
