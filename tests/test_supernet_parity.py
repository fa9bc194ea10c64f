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


# ----- in-place gradients of sliced parameters (layers.sliced) vs plain autograd slicing ----------
def _student(mode: str):
    """A supernet in a StudentModule: MLM for 'heads', KD (with its sliced projection) for 'dims'."""
    from autotinybert.train.objectives import StudentModule

    supernet = make_supernet(mode).train()
    objective = "mlm" if mode == "heads" else "kd"
    torch.manual_seed(1)
    return StudentModule(supernet, objective, teacher_hidden=24 if objective == "kd" else None)


def _objective_inputs(module, arch, seed: int):
    from autotinybert.train.objectives import TeacherOutput

    ids, mask, types = batch(seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.where(torch.rand(ids.shape, generator=g) < 0.4, ids, -100)
    teacher = None
    if module.objective == "kd":
        heads = module.model.space.max_arch.heads
        teacher = TeacherOutput(scores=torch.randn(3, heads, 11, 11, generator=g),
                                hidden=torch.randn(3, 11, 24, generator=g))
    return (ids, mask), dict(arch=arch, labels=labels, teacher=teacher)


@pytest.mark.parametrize("mode", ["heads", "dims"])
def test_in_place_gradients_equal_plain_autograd_slicing(mode):
    """One sub-model's backward: the gradients added in place equal autograd's full-size ones, and the in-place
    path adds into the existing `.grad` (same tensor) instead of handing autograd a new full-size gradient."""
    from autotinybert.layers import reference_gradients

    module = _student(mode)
    space = module.model.space
    for s, arch in enumerate([space.sample(np.random.default_rng(s)) for s in range(3)] + [space.min_arch]):
        args, kwargs = _objective_inputs(module, arch, seed=s)

        def backward():
            with torch.random.fork_rng():  # the same dropout masks in every pass
                torch.manual_seed(s)
                module(*args, **kwargs).loss.backward()

        module.zero_grad(set_to_none=True)
        with reference_gradients():
            backward()
        expected = {k: (p.grad.clone() if p.grad is not None else None) for k, p in module.named_parameters()}
        module.zero_grad(set_to_none=True)
        backward()
        buffers = {k: p.grad for k, p in module.named_parameters()}
        backward()  # a second pass accumulates into the same buffers
        for name, p in module.named_parameters():
            if expected[name] is None:
                assert p.grad is None, (str(arch), name)  # a layer past the sub-model's depth
                continue
            assert p.grad is buffers[name], (str(arch), name)
            assert torch.allclose(p.grad, 2 * expected[name], atol=1e-6), (str(arch), name)


@pytest.mark.parametrize("mode", ["heads", "dims"])
def test_in_place_gradient_buffers_give_the_adamw_trajectory_of_plain_autograd(mode):
    """Six optimizer steps of the one-shot recipe (M sub-models accumulated, clipping, AdamW with weight decay):
    the trainer's path (in-place slices, persistent `GradientBuffers` split over several buckets, zeroed in place)
    against the path before it (plain autograd slicing, gradients set to None after each step and zero-filled for
    parameters no sub-model touched). Steps 1+ leave out the max arch, so some layers get a zero gradient, which
    AdamW still applies (moments, weight decay) in both paths."""
    import copy
    import dataclasses

    from autotinybert.layers import reference_gradients
    from autotinybert.train.distributed import GradientBuffers
    from autotinybert.train.optim import adamw

    new = _student(mode)
    old = copy.deepcopy(new)
    opts = {m: adamw(m, learning_rate=3e-3, weight_decay=0.01, eps=1e-6) for m in (new, old)}
    buffers = GradientBuffers(new.parameters(), bucket_bytes=4096)
    assert len(buffers.buckets) > 3
    space = new.model.space
    for step in range(6):
        rng = np.random.default_rng(step)
        sampled = [dataclasses.replace(space.sample(rng), layers=2) for _ in range(2)]  # layer 2 untouched
        archs = ([space.max_arch] if step == 0 else []) + [space.min_arch] + sampled
        scale = 1.0 / len(archs)
        buffers.attach()
        for m, arch in enumerate(archs):
            args, kwargs = _objective_inputs(new, arch, seed=10 * step + m)
            with torch.random.fork_rng():  # the same dropout masks in both paths
                torch.manual_seed(step * 100 + m)
                (new(*args, **kwargs).loss * scale).backward()
            with torch.random.fork_rng(), reference_gradients():
                torch.manual_seed(step * 100 + m)
                (old(*args, **kwargs).loss * scale).backward()
        if step > 0:  # some parameter went untouched this step: the old path gave it no gradient at all
            assert any(p.grad is None for p in old.parameters())
        for p in old.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for module in (new, old):
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opts[module].step()
        buffers.zero()
        old.zero_grad(set_to_none=True)
    assert all(p.grad is v for p, v in zip(buffers.params, buffers.views))
    assert all(float(v.abs().max()) == 0.0 for v in buffers.buckets)
    start = _student(mode)
    with torch.no_grad():
        moved = max(float((a - b).abs().max()) for a, b in zip(new.parameters(), start.parameters()))
    assert moved > 1e-2  # training moved the weights
    for (name, a), b in zip(new.named_parameters(), old.parameters()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name
