"""SQuAD windows (max length / stride), the max-context rule, training targets, and n-best span decoding."""

import numpy as np
import pytest

from autotinybert.downstream import SquadExample, build_features, decode_spans
from autotinybert.downstream.squad import SquadFeature, SquadFeatures, max_context_flags, window_starts
from autotinybert.errors import UserError


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "the", "capital", "of", "france", "?",
             "paris", "big", ".", "w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9"]
    return BertTokenizer(vocab={w: i for i, w in enumerate(words)})


def test_window_starts_advance_by_stride():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]     # last window [6, 10) reaches the end
    assert window_starts(3, 4, 2) == [0]
    assert window_starts(9, 4, 8) == [0, 4, 8]         # stride never skips tokens (capped at the window)


def test_max_context_picks_the_most_central_window():
    flags = max_context_flags([0, 2, 4], 4, 8)
    # token 2: window 0 (left 2, right 1 -> 1) vs window 1 (left 0 -> 0): window 0
    # token 3: window 0 -> min(3, 0) = 0; window 1 -> min(1, 2) = 1: window 1
    # token 5: window 1 -> min(3, 0) = 0; window 2 -> min(1, 2) = 1: window 2
    assert flags[0] == [True, True, True, False]
    assert flags[1] == [False, True, True, False]
    assert flags[2] == [False, True, True, True]
    for pos in range(8):  # every token is max-context in exactly one window
        owners = [w for w, s in enumerate([0, 2, 4]) if s <= pos < s + 4 and flags[w][pos - s]]
        assert len(owners) == 1


def test_build_features_windows_and_targets(tokenizer):
    context = "w0 w1 w2 w3 w4 w5 Paris w6 w7 w8 w9 w0 w1 w2"
    ex = SquadExample("q", "t", "What is the capital of France?", context, ("Paris",), (context.index("Paris"),))
    feats = build_features(tokenizer, [ex], max_seq_length=16, doc_stride=3, training=True)
    # question = 7 tokens -> window of 16 - 7 - 3 = 6 context tokens over 14: starts 0, 3, 6, 9
    assert [len(f.offsets) for f in feats.features] == [6, 6, 6, 5]
    for f in feats.features:
        assert f.input_ids[0] == tokenizer.cls_token_id and f.input_ids[-1] == tokenizer.sep_token_id
        assert f.input_ids[f.context_start - 1] == tokenizer.sep_token_id
        assert len(f.input_ids) == len(f.token_type_ids) <= 16
        assert f.token_type_ids.count(1) == len(f.offsets) + 1
    answer_token = 6  # "Paris" is the 7th context token
    for f, start in zip(feats.features, [0, 3, 6, 9]):
        if start <= answer_token < start + 6:
            pos = f.start_position
            assert pos == f.end_position == answer_token - start + f.context_start
            s, e = f.offsets[pos - f.context_start]
            assert context[s:e] == "Paris"
        else:
            assert (f.start_position, f.end_position) == (0, 0)  # answer outside the window -> [CLS]


def test_too_short_max_length_is_an_error(tokenizer):
    ex = SquadExample("q", "t", "what is the capital of france ?", "paris", ("paris",), (0,))
    with pytest.raises(UserError, match="leaves no room for the context"):
        build_features(tokenizer, [ex], max_seq_length=10)


def _feature(example_index, n_question, offsets, max_context):
    cs = n_question + 2
    return SquadFeature(example_index, [0] * (cs + len(offsets) + 1), [0] * (cs + len(offsets) + 1), cs,
                        offsets, max_context)


def test_span_decoding_on_a_hand_made_example():
    context = "Denver Broncos beat Carolina Panthers"
    ex = SquadExample("q1", "t", "who?", context, ("Denver Broncos",), (0,))
    offsets = [(0, 6), (7, 14), (15, 19), (20, 28), (29, 37)]
    feat = _feature(0, 1, offsets, [True] * 5)           # context tokens at positions 3..7
    start = np.full(9, -10.0)
    end = np.full(9, -10.0)
    start[0], end[0] = 50.0, 50.0                        # [CLS] is never an answer
    start[3], start[6], start[7] = 5.0, 1.0, 9.0         # Denver, Carolina, Panthers
    end[4], end[7] = 9.0, 2.0                            # Broncos, Panthers
    # Panthers -> Broncos (18) ends before it starts: invalid. Best valid: Denver -> Broncos (14).
    spans = lambda **kw: decode_spans([ex], SquadFeatures([feat]), [start], [end], **kw)["q1"]
    assert spans(n_best=20, max_answer_length=30) == "Denver Broncos"
    # At most one token: Panthers -> Panthers (11) beats Broncos -> Broncos (-1).
    assert spans(n_best=20, max_answer_length=1) == "Panthers"
    # n-best 1 keeps start Panthers and end Broncos only: no valid span, empty answer. n-best 2 finds it again.
    assert spans(n_best=1) == ""
    assert spans(n_best=2) == "Denver Broncos"


def test_decoding_across_windows_uses_max_context_only():
    context = "a b c d"
    ex = SquadExample("q", "t", "?", context, ("c",), (4,))
    offs = [(0, 1), (2, 3), (4, 5), (6, 7)]
    w0 = _feature(0, 1, offs[0:3], [True, True, False])   # token "c" is not max-context here
    w1 = _feature(0, 1, offs[1:4], [False, True, True])
    s0 = np.zeros(7); e0 = np.zeros(7); s0[5] = 20.0                  # start "c" in window 0: not max context
    s1 = np.zeros(7); e1 = np.zeros(7); s1[5] = 2.0; e1[5] = 2.0      # "d" in window 1: 4
    assert decode_spans([ex], SquadFeatures([w0, w1]), [s0, s1], [e0, e1])["q"] == "d"
    s1[4] = 3.0; e1[4] = 3.0                                          # "c" in window 1 (max context) wins
    assert decode_spans([ex], SquadFeatures([w0, w1]), [s0, s1], [e0, e1])["q"] == "c"
