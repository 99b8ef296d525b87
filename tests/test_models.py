"""Networks of both papers: parameter counts, attention placement and maths, weights, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from covtl.models import (
    ATTN_PLACEMENT,
    MODEL_NAMES,
    PAPER_B_MODELS,
    NonLocalBlock,
    attention_indices,
    build_model,
    count_parameters,
)

# He et al. 2020, Table II (1000 classes)
TABLE_II = {
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "crnet": 546_882,
}
# CRNet built from the paper's text; see covtl.models.zoo.CRNet for why it differs
CRNET_FROM_TEXT = 635_752


@pytest.mark.parametrize("name", [n for n in PAPER_B_MODELS if n != "crnet"])
def test_parameter_counts_match_table_ii(name):
    assert count_parameters(build_model(name, num_classes=1000)) == TABLE_II[name]


def test_crnet_parameter_count_is_the_documented_text_reading():
    n = count_parameters(build_model("crnet", num_classes=1000))
    assert n == CRNET_FROM_TEXT
    assert n != TABLE_II["crnet"]  # documented gap; if this fails, update the CRNet docstring
    assert PAPER_B_MODELS == tuple(TABLE_II)


@pytest.mark.parametrize("depth", [18, 34, 50, 101])
@pytest.mark.parametrize("n_attn", [0, 1, 5])
def test_attention_counts_per_stage(depth, n_attn):
    model = build_model(f"resnet{depth}", num_classes=2, n_attn=n_attn)
    per_stage = {f"layer{i}": 0 for i in range(1, 5)}
    for name, _ in model.attention_blocks:
        per_stage[name.split(".")[0]] += 1
    expected = {
        0: {"layer1": 0, "layer2": 0, "layer3": 0, "layer4": 0},
        1: {"layer1": 0, "layer2": 1, "layer3": 0, "layer4": 0},
        5: {"layer1": 0, "layer2": 2, "layer3": 2, "layer4": 1},
    }[n_attn]
    assert per_stage == expected
    assert len(model.attention_blocks) == n_attn == sum(len(v) for v in ATTN_PLACEMENT[n_attn].values())


def test_attention_indices_are_the_documented_ones():
    assert attention_indices(50, 1) == {"layer2": (3,)}
    assert attention_indices(50, 5) == {"layer2": (2, 3), "layer3": (4, 5), "layer4": (2,)}
    assert attention_indices(101, 5) == {"layer2": (2, 3), "layer3": (21, 22), "layer4": (2,)}
    assert attention_indices(18, 5) == {"layer2": (0, 1), "layer3": (0, 1), "layer4": (1,)}
    model = build_model("resnet101", n_attn=5)
    names = [n for n, _ in model.attention_blocks]
    assert names == ["layer2.attn.2", "layer2.attn.3", "layer3.attn.21", "layer3.attn.22", "layer4.attn.2"]


def test_attention_block_widths_match_the_stage():
    model = build_model("resnet50", n_attn=5)
    widths = {n.split(".")[0]: b.in_channels for n, b in model.attention_blocks}
    assert widths == {"layer2": 512, "layer3": 1024, "layer4": 2048}


def test_five_attn_resnet50_from_plain_weights_equals_plain(tmp_path):
    torch.manual_seed(0)
    plain = build_model("resnet50", num_classes=1000).eval()
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    attn = build_model("resnet50", num_classes=1000, n_attn=5, weights=path).eval()
    report = attn.load_report
    # exactly the attention blocks' keys are new
    assert set(report.missing_allowed) == {
        f"{n}.{k}" for n, b in attn.attention_blocks for k in b.state_dict()
    }
    assert all(".attn." in k for k in report.missing_allowed)
    assert report.head_reset == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), plain(x), rtol=0, atol=0)


def slow_non_local(block: NonLocalBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1) of paper A with explicit loops over positions: O[:, j] = sum_i V[:, i] A[i, j]."""
    n_batch, c, h, w = x.shape
    z = torch.empty_like(x)
    attns = []
    for b in range(n_batch):
        q = block.query(x[b : b + 1])[0].reshape(block.key_channels, h * w)  # dk x hw
        k = block.key(x[b : b + 1])[0].reshape(block.key_channels, h * w)
        v = block.value(x[b : b + 1])[0].reshape(block.value_channels, h * w)
        attn = torch.empty(h * w, h * w, dtype=x.dtype)
        for j in range(h * w):  # one query position = one column
            scores = torch.stack([torch.dot(k[:, i], q[:, j]) for i in range(h * w)])
            e = torch.exp(scores - scores.max())
            attn[:, j] = e / e.sum()
        o = torch.zeros(block.value_channels, h * w, dtype=x.dtype)
        for j in range(h * w):
            for i in range(h * w):
                o[:, j] += v[:, i] * attn[i, j]
        o = o.reshape(1, block.value_channels, h, w)
        z[b] = x[b] + block.out_norm(block.out_proj(o))[0]
        attns.append(attn)
    return z, torch.stack(attns)


def test_attention_block_matches_slow_loop_from_eq1():
    torch.manual_seed(0)
    block = NonLocalBlock(8).double().eval()
    with torch.no_grad():  # leave the identity init so the attention branch is visible
        block.out_norm.weight.normal_()
        block.out_norm.bias.normal_()
        block.out_norm.running_mean.normal_()
        block.out_norm.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 3, 4, dtype=torch.double)
    with torch.no_grad():
        z, attn = block(x, return_attention=True)
        z_slow, attn_slow = slow_non_local(block, x)
    torch.testing.assert_close(attn, attn_slow)
    torch.testing.assert_close(z, z_slow)


def test_attention_block_is_identity_at_init_and_weights_sum_to_one():
    torch.manual_seed(0)
    block = NonLocalBlock(16)
    x = torch.randn(3, 16, 5, 5)
    z, attn = block(x, return_attention=True)
    torch.testing.assert_close(z, x, rtol=0, atol=0)
    assert attn.shape == (3, 25, 25)
    # every query position's attention over the 25 key positions sums to one
    torch.testing.assert_close(attn.sum(dim=1), torch.ones(3, 25))
    assert (attn >= 0).all()


def test_last_attention_exposes_its_map():
    model = build_model("resnet50", num_classes=2, n_attn=5).eval()
    last = model.last_attention
    assert last is model.layer4.attn["2"]
    last.keep_attention = True
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    assert last.attention.shape == (2, 4, 4)  # layer4 at 64 px is 2 x 2 = 4 positions
    assert build_model("resnet50", num_classes=2).last_attention is None


def test_every_parameter_of_an_attention_resnet_gets_a_gradient():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, n_attn=5, dropout=0.5)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 0, 1])
    # at init the attention branch is multiplied by 0, so only its output norm can learn:
    nn.functional.cross_entropy(model(x), y).backward()
    for _, block in model.attention_blocks:
        assert block.out_norm.weight.grad.abs().sum() > 0
        assert block.query.weight.grad.abs().sum() == 0
    # once the output norm has moved off zero, every parameter learns
    model.zero_grad()
    with torch.no_grad():
        for _, block in model.attention_blocks:
            block.out_norm.weight.fill_(0.1)
    nn.functional.cross_entropy(model(x), y).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes_features_and_gradients_at_64px(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=2)
    x = torch.randn(2, 3, 64, 64)
    maps = []
    handle = model.gradcam_layer.register_forward_hook(lambda m, i, o: maps.append(o))
    try:
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
    finally:
        handle.remove()
    assert feats.shape == (2, model.feature_dim)
    assert logits.shape == (2, 2) and model.num_classes == 2
    assert maps and maps[0].dim() == 4 and maps[0].shape[0] == 2
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert missing == []
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))


def test_reset_head_changes_only_the_head():
    model = build_model("densenet121", num_classes=1000)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_head(3)
    after = model.state_dict()
    changed = {k for k in after if k not in before or after[k].shape != before[k].shape
               or not torch.equal(after[k], before[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown model 'resnet51'.*resnet50.*crnet"):
        build_model("resnet51")


@pytest.mark.parametrize(
    ("name", "n_attn", "match"),
    [("resnet50", 3, "n_attn must be one of"), ("vgg16", 1, "takes no attention blocks")],
)
def test_bad_attention_requests_raise(name, n_attn, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, n_attn=n_attn)
