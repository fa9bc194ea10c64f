"""Elastic SuperBERT vs extracted standalone models vs stock transformers BERT: outputs must agree."""

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification, BertModel

from autotinybert import (
    Arch,
    AutoTinyBertConfig,
    AutoTinyBertForMaskedLM,
    AutoTinyBertForQuestionAnswering,
    AutoTinyBertForSequenceClassification,
    AutoTinyBertModel,
    SearchSpace,
    SuperBertConfig,
    SuperBertForMaskedLM,
    SupernetError,
    extract,
)

VOCAB = 97
TINY = {
    "heads": {"attention": "heads", "layers": [1, 3], "hidden": [16, 40, 4], "ffn": [8, 72, 4], "heads": [1, 5],
              "head_size": 8},
    "dims": {"attention": "dims", "layers": [1, 3], "hidden": [16, 40, 4], "ffn": [8, 72, 4], "heads": 4,
             "qkv": [8, 48, 4]},
}


DEPTH_RULES = {"first": None, "spread": None, "importance": [1, 2, 0]}  # rule -> layer ranking


def make_supernet(mode: str, seed: int = 0, depth_rule: str = "first") -> SuperBertForMaskedLM:
    torch.manual_seed(seed)  # parameter init only; every draw in the library itself uses explicit generators
    space = SearchSpace.from_dict(TINY[mode], name=f"tiny-{mode}")
    model = SuperBertForMaskedLM(SuperBertConfig(space=space, vocab_size=VOCAB, max_position_embeddings=32,
                                                 depth_rule=depth_rule, layer_ranking=DEPTH_RULES[depth_rule]))
    with torch.no_grad():  # non-trivial LayerNorms and biases so slicing mistakes cannot hide behind 1s and 0s
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape))
    return model.eval()


def batch(seed: int = 1, B: int = 3, T: int = 11):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0  # padding present
    mask[2, 4:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 5:] = 1
    return ids, mask, types


@pytest.mark.parametrize("depth_rule", list(DEPTH_RULES))
@pytest.mark.parametrize("mode", ["heads", "dims"])
def test_extracted_models_equal_supernet_on_50_random_archs(mode, depth_rule):
    supernet = make_supernet(mode, depth_rule=depth_rule)
    ids, mask, types = batch()
    rng = np.random.default_rng(0)
    archs = {supernet.space.max_arch, supernet.space.min_arch}
    while len(archs) < 52:
        archs.add(supernet.space.sample(rng))
    worst = 0.0
    with torch.no_grad():
        for arch in sorted(archs):
            ref = supernet(ids, mask, types, arch=arch, return_logits=True, output_attentions=True,
                           output_hidden_states=True)
            model = extract(supernet, arch)
            out = model(ids, attention_mask=mask, token_type_ids=types, output_attentions=True,
                        output_hidden_states=True)
            assert out.logits.shape == (3, 11, VOCAB)
            assert out.attentions[-1].shape == (3, arch.heads, 11, 11)
            diffs = [
                (out.hidden_states[-1] - ref.last_hidden_state).abs().max(),
                (out.logits - ref.logits).abs().max(),
                (out.attentions[-1] - ref.attentions).abs().max(),
            ] + [(a - b).abs().max() for a, b in zip(out.hidden_states, ref.hidden_states)]
            worst = max(worst, max(float(d) for d in diffs))
    assert worst <= 1e-5


@pytest.mark.parametrize("mode", ["heads", "dims"])
def test_fused_and_explicit_attention_paths_agree(mode):
    supernet = make_supernet(mode)
    ids, mask, types = batch()
    arch = supernet.space.sample(np.random.default_rng(3))
    with torch.no_grad():
        fused = supernet(ids, mask, types, arch=arch).last_hidden_state
        explicit = supernet(ids, mask, types, arch=arch, output_attentions=True).last_hidden_state
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_mlm_loss_covers_labelled_positions_only():
    supernet = make_supernet("heads")
    ids, mask, types = batch()
    arch = Arch.parse("2-24-40-3-24")
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 3], labels[2, 0] = 5, 6, 7
    with torch.no_grad():
        out = supernet(ids, mask, types, arch=arch, labels=labels)
        full = supernet(ids, mask, types, arch=arch, return_logits=True).logits
    assert out.logits.shape == (3, VOCAB)
    expected = torch.nn.functional.cross_entropy(full[labels != -100], labels[labels != -100])
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_no_hidden_state_between_calls():
    supernet = make_supernet("dims")
    ids, mask, types = batch()
    a, b = Arch.parse("3-40-72-4-48"), Arch.parse("1-16-8-4-8")
    with torch.no_grad():
        first = supernet(ids, mask, types, arch=a).last_hidden_state
        supernet(ids, mask, types, arch=b)
        again = supernet(ids, mask, types, arch=a).last_hidden_state
    assert torch.equal(first, again)
    assert not any(isinstance(v, Arch) for m in supernet.modules() for v in vars(m).values())


def test_gradients_touch_only_the_sub_model():
    supernet = make_supernet("heads").train()
    ids, mask, types = batch()
    arch = Arch.parse("2-24-40-3-24")
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, ids, -100)
    supernet(ids, mask, types, arch=arch, labels=labels).loss.backward()
    layer0 = supernet.bert.encoder.layer[0]
    q = layer0.attention.self.query.weight.grad
    assert q.shape == (40, 40) and q[:24, :24].abs().sum() > 0
    assert q[24:].abs().sum() == 0 and q[:, 24:].abs().sum() == 0
    assert layer0.intermediate.dense.weight.grad[40:].abs().sum() == 0
    assert all(p.grad is None for p in supernet.bert.encoder.layer[2].parameters())  # beyond `layers`
    assert supernet.bert.embeddings.word_embeddings.weight.grad[:, 24:].abs().sum() == 0


def test_check_arch_errors():
    supernet = make_supernet("dims")
    with pytest.raises(SupernetError, match="layers=4 > max 3"):
        supernet(torch.ones(1, 3, dtype=torch.long), arch="4-16-8-4-8")
    with pytest.raises(SupernetError, match="heads=2 must be 4"):
        supernet(torch.ones(1, 3, dtype=torch.long), arch="1-16-8-2-8")
    heads = make_supernet("heads")
    with pytest.raises(SupernetError, match="head size 4"):
        heads(torch.ones(1, 3, dtype=torch.long), arch="1-16-8-2-8")


def _bert_config(**kw) -> BertConfig:
    return BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=40, max_position_embeddings=32, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0, **kw)


@pytest.mark.parametrize(
    "ours, theirs, kwargs",
    [
        (AutoTinyBertModel, BertModel, {}),
        (AutoTinyBertForMaskedLM, BertForMaskedLM, {}),
        (AutoTinyBertForSequenceClassification, BertForSequenceClassification, {"num_labels": 3}),
        (AutoTinyBertForQuestionAnswering, BertForQuestionAnswering, {}),
    ],
)
def test_standalone_equals_stock_bert(ours, theirs, kwargs):
    torch.manual_seed(0)
    bert = theirs(_bert_config(**kwargs)).eval()
    data = bert.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        data.pop(key, None)
    model = ours(AutoTinyBertConfig(**data)).eval()
    missing, unexpected = model.load_state_dict(bert.state_dict(), strict=False)
    assert not [k for k in missing + unexpected if "decoder" not in k]
    model.tie_weights()
    ids, mask, types = batch()
    with torch.no_grad():
        a = bert(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        b = model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    for key in a.keys():
        if key == "hidden_states":
            for x, y in zip(a[key], b[key]):
                assert (x - y).abs().max() <= 1e-5
        elif a[key] is not None:
            assert (a[key] - b[key]).abs().max() <= 1e-5, key


def test_standalone_attentions_equal_stock_bert_eager():
    torch.manual_seed(0)
    config = _bert_config()
    config._attn_implementation = "eager"  # stock BERT returns attention probabilities on its eager path
    bert = BertModel(config).eval()
    model = AutoTinyBertModel(AutoTinyBertConfig.from_arch("2-24-40-3-24", vocab_size=VOCAB,
                                                           max_position_embeddings=32)).eval()
    model.load_state_dict(bert.state_dict())
    ids, mask, types = batch()
    with torch.no_grad():
        a = bert(ids, attention_mask=mask, token_type_ids=types, output_attentions=True).attentions
        b = model(ids, attention_mask=mask, token_type_ids=types, output_attentions=True).attentions
    assert len(a) == len(b) == 2
    assert max(float((x - y).abs().max()) for x, y in zip(a, b)) <= 1e-6


def test_head_losses_match_stock_bert():
    torch.manual_seed(0)
    ids, mask, types = batch()
    for theirs, ours, labels, num_labels in [
        (BertForSequenceClassification, AutoTinyBertForSequenceClassification,
         {"labels": torch.tensor([0, 2, 1])}, 3),
        (BertForQuestionAnswering, AutoTinyBertForQuestionAnswering,
         {"start_positions": torch.tensor([1, 2, 30]), "end_positions": torch.tensor([3, 2, 40])}, 2),
        (BertForMaskedLM, AutoTinyBertForMaskedLM, {"labels": torch.where(ids % 3 == 0, ids, -100)}, 2),
    ]:
        bert = theirs(_bert_config(num_labels=num_labels)).eval()
        data = {k: v for k, v in bert.config.to_dict().items() if k not in ("model_type", "architectures",
                                                                                 "transformers_version")}
        model = ours(AutoTinyBertConfig(**data)).eval()
        model.load_state_dict(bert.state_dict(), strict=False)
        model.tie_weights()
        with torch.no_grad():
            expected = bert(ids, attention_mask=mask, token_type_ids=types, **labels).loss
            got = model(ids, attention_mask=mask, token_type_ids=types, **labels).loss
        assert torch.allclose(expected, got, atol=1e-5), theirs.__name__

    regression = AutoTinyBertForSequenceClassification(AutoTinyBertConfig.from_arch(
        "1-16-16-2-16", vocab_size=VOCAB, num_labels=1)).eval()
    out = regression(ids, attention_mask=mask, labels=torch.tensor([0.5, 1.0, 4.0]))
    assert torch.allclose(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1),
                                                                 torch.tensor([0.5, 1.0, 4.0])))


@pytest.mark.parametrize("depth_rule", list(DEPTH_RULES))
@pytest.mark.parametrize("mode", ["heads", "dims"])
def test_supernet_gradients_equal_standalone_gradients(mode, depth_rule):
    """Backward through the slices (and the tied-embedding autograd function) equals the standalone model's."""
    from autotinybert.extract import sub_state_dict

    supernet = make_supernet(mode, depth_rule=depth_rule)
    ids, mask, types = batch()
    ids[0, 3] = 0  # a padding-id token: its embedding row gets no lookup gradient (nn.Embedding semantics)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.4, ids, -100)
    for arch in [supernet.space.sample(np.random.default_rng(s)) for s in range(4)] + [supernet.space.max_arch]:
        supernet.zero_grad(set_to_none=True)
        supernet(ids, mask, types, arch=arch, labels=labels).loss.backward()
        model = extract(supernet, arch)
        model.zero_grad(set_to_none=True)
        out = model(ids, attention_mask=mask, token_type_ids=types, labels=labels)
        out.loss.backward()
        super_grads = {k: p.grad if p.grad is not None else torch.zeros_like(p)
                       for k, p in supernet.named_parameters()}
        shapes = {k: p.shape for k, p in model.named_parameters()}
        # slice the supernet's gradients exactly as extraction slices its weights
        expected = sub_state_dict(super_grads, supernet.config.layout, arch, shapes,
                                  supernet.config.layer_ids(arch.layers))
        for name, p in model.named_parameters():
            assert torch.allclose(p.grad, expected[name], atol=1e-6), (str(arch), name)


def test_depth_rules_pick_the_documented_layers():
    from autotinybert.supernet import depth_layers

    assert [depth_layers("first", n, 6) for n in (1, 3, 6)] == [[0], [0, 1, 2], list(range(6))]
    assert [depth_layers("spread", n, 6) for n in range(1, 7)] == [[5], [2, 5], [1, 3, 5], [0, 2, 3, 5],
                                                                   [0, 1, 2, 3, 5], list(range(6))]
    assert depth_layers("importance", 2, 4, [3, 1, 0, 2]) == [1, 3]
    with pytest.raises(SupernetError, match="ranking"):
        depth_layers("importance", 2, 4, [3, 1])
    with pytest.raises(SupernetError, match="unknown depth rule"):
        SuperBertConfig(space=SearchSpace.from_dict(TINY["heads"]), vocab_size=VOCAB, depth_rule="last")


@pytest.mark.parametrize("depth_rule", ["spread", "importance"])
def test_depth_rule_runs_the_picked_layers_and_survives_save_and_load(depth_rule, tmp_path):
    supernet = make_supernet("dims", depth_rule=depth_rule)
    ids, mask, types = batch()
    arch = Arch.parse("2-40-72-4-48")
    picked = supernet.config.layer_ids(2)
    assert picked == ([0, 2] if depth_rule == "spread" else [1, 2])
    ran = []
    with torch.no_grad():
        out = supernet(ids, mask, types, arch=arch, probe=lambda name, i, t: ran.append(i) if name == "ffn" else None)
        supernet.save_pretrained(tmp_path / "sn")
        again = SuperBertForMaskedLM.from_pretrained(tmp_path / "sn").eval()(ids, mask, types, arch=arch)
    assert ran == picked
    assert again.last_hidden_state.equal(out.last_hidden_state)
