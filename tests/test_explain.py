"""Grad-CAM, attention maps, overlays and localisation: known answers, references, hooks released."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from covtl.explain import (
    GradCAM,
    attention_map,
    attention_weights,
    localisation,
    localisation_scores,
    overlay,
)
from covtl.models import build_model


class SpotNet(nn.Module):
    """Feature map A = 4x4 average pool of input channels 0 and 1 (8 x 8 for 32 px).

    logit_0 = mean(A_0) - mean(A_1), logit_1 = mean(A_1) - mean(A_0): Grad-CAM weights are
    +-1/64, so class c's map is ReLU(A_c - A_other) / 64, peaking on channel c's bright spot.
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.AvgPool2d(4)
        self.scale = nn.Parameter(torch.ones(()))  # something for requires_grad / .grad checks

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.body(x[:, :2] * self.scale).mean(dim=(2, 3))  # N x 2
        return torch.stack([m[:, 0] - m[:, 1], m[:, 1] - m[:, 0]], dim=1)


SPOT0 = (slice(4, 8), slice(4, 8))  # channel 0's spot (feature cell (1, 1))
SPOT1 = (slice(20, 24), slice(24, 28))  # channel 1's spot (feature cell (5, 6))


def _spot_images(n: int = 2) -> torch.Tensor:
    x = torch.zeros(n, 3, 32, 32)
    x[:, 0, SPOT0[0], SPOT0[1]] = 1.0
    x[:, 1, SPOT1[0], SPOT1[1]] = 2.0  # brighter: class 1 is predicted
    return x


def _hook_counts(module: nn.Module) -> tuple[int, ...]:
    return tuple(
        len(getattr(module, name))
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    )


def _manual_gradcam(maps: torch.Tensor, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM from a feature map and logits computed from it, straight from the formula."""
    idx = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(idx)), idx].sum(), maps)
    cam = F.relu((grad.mean(dim=(2, 3), keepdim=True) * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    return cam / cam.amax(dim=(1, 2), keepdim=True)


# ------------------------------------------------------------------------------------- Grad-CAM


def test_gradcam_peaks_on_the_spot_of_the_explained_class():
    model, x = SpotNet(), _spot_images()
    with GradCAM(model) as cam:
        predicted = cam(x)  # class_idx=None -> predicted class 1
        assert cam.class_idx.tolist() == [1, 1]
        class0 = cam(x, class_idx=0)
        per_image = cam(x, class_idx=[1, 0])
    for maps, spot, other in ((predicted, SPOT1, SPOT0), (class0, SPOT0, SPOT1)):
        for m in maps:
            r, c = divmod(int(m.argmax()), 32)
            assert spot[0].start <= r < spot[0].stop and spot[1].start <= c < spot[1].stop
            assert m.max() == 1.0
            assert m[other].max() == 0.0  # negative evidence is cut by the ReLU
    torch.testing.assert_close(per_image, torch.stack([predicted[0], class0[1]]))


def test_gradcam_of_an_all_zero_map_stays_zero():
    model = SpotNet()
    with GradCAM(model) as cam:
        maps = cam(torch.zeros(2, 3, 32, 32))
    assert maps.shape == (2, 32, 32)
    assert not maps.isnan().any() and (maps == 0).all()


def test_gradcam_resnet_shape_range_and_reference():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2).eval()
    x = torch.randn(3, 3, 64, 64)
    with GradCAM(model) as cam:
        maps = cam(x)
    assert maps.shape == (3, 64, 64)
    assert not maps.isnan().any() and maps.min() >= 0 and maps.max() <= 1
    assert torch.allclose(maps.amax(dim=(1, 2)), torch.ones(3))
    feats = model.forward_maps(x)  # the output of gradcam_layer (layer4)
    logits = model.forward_head(torch.flatten(model.avgpool(feats), 1))
    torch.testing.assert_close(maps, _manual_gradcam(feats, logits, (64, 64)), atol=1e-5, rtol=1e-4)


def test_gradcam_densenet121_at_64px():
    torch.manual_seed(0)
    model = build_model("densenet121", num_classes=2)
    x = torch.randn(1, 3, 64, 64)
    with GradCAM(model) as cam:
        maps = cam(x)
    with GradCAM(model, target_layer=model.features.transition3.norm) as cam:  # in-place ReLU follows
        inner = cam(x)
    for m in (maps, inner):
        assert m.shape == (1, 64, 64) and not m.isnan().any() and 0 <= m.min() and m.max() <= 1


def test_gradcam_torchvision_densenet_with_in_place_relu_matches_reference():
    """torchvision's DenseNet applies ReLU in place to ``features``' output: the map must be
    the Grad-CAM of that output *before* the ReLU, as a module backward hook could not give."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None, num_classes=3).eval()
    x = torch.randn(1, 3, 64, 64)
    with GradCAM(model, target_layer=model.features) as cam:
        maps = cam(x)
    feats = model.features(x)
    logits = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(feats), 1), 1))
    torch.testing.assert_close(maps, _manual_gradcam(feats, logits, (64, 64)), atol=1e-5, rtol=1e-4)


def test_gradcam_releases_hooks_and_restores_the_model():
    model = SpotNet()
    model.train()
    model.scale.requires_grad_(False)
    layer = model.gradcam_layer
    before = _hook_counts(layer)
    with GradCAM(model) as cam:
        assert _hook_counts(layer) != before and not model.training
        cam(_spot_images())
    assert _hook_counts(layer) == before
    assert model.training and not model.scale.requires_grad and model.scale.grad is None

    model.scale.requires_grad_(True)
    with GradCAM(model) as cam:
        cam(_spot_images())
    assert model.scale.requires_grad and model.scale.grad is None  # parameter grads untouched


def test_gradcam_releases_hooks_after_an_exception():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2)
    model.train()
    model.layer1.eval()  # a submodule with its own mode keeps it
    before = _hook_counts(model.layer4)
    with pytest.raises(KeyError, match="inside"):
        with GradCAM(model) as cam:
            cam(torch.randn(1, 3, 32, 32))
            raise KeyError("inside")
    assert _hook_counts(model.layer4) == before
    with pytest.raises(ValueError, match="class_idx"):  # errors from the call propagate too
        with GradCAM(model) as cam:
            cam(torch.randn(2, 3, 32, 32), class_idx=5)
    assert _hook_counts(model.layer4) == before
    assert model.training and model.layer4.training and not model.layer1.training


def test_gradcam_errors():
    model = SpotNet()
    with pytest.raises(RuntimeError, match="context manager"):
        GradCAM(model)(_spot_images())
    with pytest.raises(ValueError, match="gradcam_layer"):
        GradCAM(nn.Linear(2, 2))
    with GradCAM(model) as cam:
        with pytest.raises(ValueError, match="2 indices"):
            cam(_spot_images(), class_idx=[0, 1, 1])
    with GradCAM(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), target_layer=nn.Identity()) as cam:
        with pytest.raises(RuntimeError, match="ran 0 times"):
            cam(torch.randn(1, 3, 2, 2))
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with GradCAM(seq, target_layer=seq[1]) as cam:
        with pytest.raises(ValueError, match="N x C x h x w"):
            cam(torch.randn(1, 3, 2, 2))


# ------------------------------------------------------------------------------- attention maps


def test_attention_map_is_the_mean_over_queries_of_the_last_block():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, n_attn=1)  # last ATTN after layer2[1]: 8x8 at 64 px
    model.train()
    block = model.last_attention
    x = torch.randn(2, 3, 64, 64)
    weights = attention_weights(model, x)
    maps = attention_map(model, x)
    assert block.keep_attention is False and block.attention is None and model.training

    block.keep_attention = True
    model.eval()
    with torch.no_grad():
        model(x)
    manual = block.attention.mean(dim=2).reshape(2, 8, 8)  # N x n(keys) x n(queries) -> keys
    torch.testing.assert_close(weights, manual)
    torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(2))
    up = F.interpolate(manual[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, up / up.amax(dim=(1, 2), keepdim=True))
    assert maps.shape == (2, 64, 64) and not maps.isnan().any() and maps.min() >= 0 and maps.max() == 1


def test_attention_map_of_five_attns_and_errors():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, n_attn=5)
    assert attention_weights(model, torch.randn(1, 3, 64, 64)).shape == (1, 2, 2)  # layer4
    assert attention_map(model, torch.randn(1, 3, 64, 64)).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="no attention block"):
        attention_map(build_model("resnet18", num_classes=2), torch.randn(1, 3, 32, 32))


# ------------------------------------------------------------------------------------- overlay


def test_overlay_shapes_dtype_and_blend():
    heat = np.linspace(0, 1, 20 * 30).reshape(20, 30)
    grey = np.random.default_rng(0).normal(size=(20, 30))
    for image in (grey, (np.ones((20, 30, 3)) * 200).astype(np.uint8), torch.randn(3, 20, 30),
                  torch.randn(1, 20, 30)):
        out = overlay(image, heat)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    plain = overlay(np.full((4, 4), 255, np.uint8), np.zeros((4, 4)), alpha=0.0)
    assert (plain == 255).all()
    coloured = overlay(np.zeros((4, 4)), np.ones((4, 4)), alpha=1.0, cmap="jet")
    import matplotlib

    expected = np.round(255 * np.array(matplotlib.colormaps["jet"](1.0)[:3])).astype(np.uint8)
    assert (coloured == expected).all()
    with pytest.raises(ValueError, match="does not match"):
        overlay(grey, np.zeros((5, 5)))
    with pytest.raises(ValueError, match="alpha"):
        overlay(grey, heat, alpha=2)


# --------------------------------------------------------------------------------- localisation


def test_localisation_hand_made_cases():
    heat = np.zeros((4, 4))
    heat[1, 2], heat[3, 3], heat[0, 1] = 1.0, 0.5, 0.25
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = mask[0, 0] = True
    out = localisation(heat, mask)
    assert out["pointing_game"] is True
    assert out["energy_inside"] == pytest.approx(1.0 / 1.75)
    assert out["iou_at_half"] == pytest.approx(1 / 3)  # {(1,2),(3,3)} vs {(1,2),(0,0)}

    elsewhere = np.zeros((4, 4), bool)
    elsewhere[3, 3] = elsewhere[0, 1] = True
    out = localisation(torch.from_numpy(heat), torch.from_numpy(elsewhere).float()[None])  # 1xHxW 0/1
    assert out["pointing_game"] is False
    assert out["energy_inside"] == pytest.approx(0.75 / 1.75)
    assert out["iou_at_half"] == pytest.approx(1 / 3)

    zero = localisation(np.zeros((4, 4)), mask)
    assert zero == {"pointing_game": False, "energy_inside": 0.0, "iou_at_half": 0.0}
    assert localisation(heat, np.zeros((4, 4), np.uint8))["energy_inside"] == 0.0  # empty mask
    assert localisation(heat, (mask * 255).astype(np.uint8))["pointing_game"] is True  # 0/255 mask
    with pytest.raises(ValueError, match="differ"):
        localisation(heat, np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="non-negative"):
        localisation(-heat, mask)


def test_localisation_scores_find_the_spot():
    x = _spot_images(3)
    mask = torch.zeros(1, 32, 32)
    mask[0, SPOT1[0], SPOT1[1]] = 1.0
    items = [{"image": x[i], "mask": mask, "path": f"s{i}.png"} for i in range(3)]
    df = localisation_scores(SpotNet(), items, batch_size=2)
    assert list(df.columns) == ["index", "path", "method", "mask_pixels", "pointing_game",
                                "energy_inside", "iou_at_half"]
    assert df["index"].tolist() == [0, 1, 2] and (df["mask_pixels"] == 16).all()
    assert df["pointing_game"].all() and (df["energy_inside"] > 0.5).all()
    with pytest.raises(ValueError, match="unknown method"):
        localisation_scores(SpotNet(), items, method="lime")


def _medseg_items(root: Path, n: int = 8, size: int = 64) -> list[dict]:
    items = []
    for path in sorted((root / "images").glob("*.jpg"))[:n]:
        image = Image.open(path).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        mask = Image.open(root / "masks" / f"{path.stem}.png").convert("L")
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
        x = torch.from_numpy(np.asarray(image, np.float32) / 255.0)
        items.append({
            "image": ((x - 0.5) / 0.25).expand(3, size, size).clone(),
            "mask": np.asarray(mask) > 127,
            "path": str(path),
        })
    return items


@pytest.mark.realdata
def test_localisation_scores_on_medseg_masks(shared_data):
    root = shared_data / "medseg-covid"
    if not (root / "images").is_dir():
        pytest.skip(f"medseg data not found at {root}")
    items = _medseg_items(root)
    assert len(items) == 8
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=2, n_attn=5)  # untrained: values mean nothing
    for method in ("gradcam", "attention"):
        df = localisation_scores(model, items, method=method, batch_size=4)
        assert len(df) == 8 and (df["method"] == method).all()
        assert df["energy_inside"].between(0, 1).all() and df["iou_at_half"].between(0, 1).all()
        assert df["pointing_game"].dtype == bool and not df.isna().any().any()
        assert (df["mask_pixels"] == [int(item["mask"].sum()) for item in items]).all()


def test_baseline_maps_give_their_known_scores():
    """Uniform: energy inside = the mask's share of the image; centre prior: peaks in the centre."""
    from covtl.explain import baseline_map

    mask = np.zeros((8, 8), bool)
    mask[2:4, 1:3] = True  # 4 of 64 pixels, off centre
    items = [{"image": torch.zeros(3, 8, 8), "mask": torch.from_numpy(mask), "path": "a"}]
    uniform = localisation_scores(None, items, method="uniform").iloc[0]
    assert uniform["energy_inside"] == pytest.approx(4 / 64) and uniform["pointing_game"] == pytest.approx(4 / 64)
    assert uniform["iou_at_half"] == pytest.approx(4 / 64)
    centre = baseline_map("centre", 8, 8)
    assert centre.max() == pytest.approx(np.exp(-0.5 * (0.5**2 * 2) / 4))  # the 4 central pixels tie
    assert centre[3:5, 3:5].min() == centre.max() and centre[0, 0] < centre[3, 3]
    middle = mask.copy()
    middle[:] = False
    middle[3:5, 3:5] = True
    on_centre = localisation_scores(None, [{"image": torch.zeros(3, 8, 8), "mask": torch.from_numpy(middle)}],
                                    method="centre").iloc[0]
    assert on_centre["pointing_game"] and on_centre["energy_inside"] > 4 / 64
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_map("lungs", 8, 8)
