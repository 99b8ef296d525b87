"""Augmentations: shapes, determinism, paper values, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from covtl.data.transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    REGION_RATIO,
    ToNormalizedTensor,
    TwoCrops,
    build_region_views,
    build_transform,
    build_two_crops,
    cache_spec,
)

SSL_STAGES = ("a_sstl_m", "a_sstl_m_literal", "a_moco_v1", "a_simclr", "b_moco_v2")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    """A non-square RGB image with structure (so crops and flips change it)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:150, 0:190]
    base = np.stack([xx * 255 / 190, yy * 255 / 150, (xx + yy) % 256], axis=-1)
    noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("stage", list(AUGMENTATIONS))
def test_output_is_float_3_by_s_by_s(stage: str, size: int, train: bool, image: Image.Image) -> None:
    torch.manual_seed(0)
    x = build_transform(stage, size, train=train)(image)
    assert isinstance(x, torch.Tensor)
    assert x.shape == (3, size, size)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("stage", list(AUGMENTATIONS))
def test_train_transform_repeats_under_manual_seed(stage: str, image: Image.Image) -> None:
    transform = build_transform(stage, 64, train=True)
    torch.manual_seed(123)
    first = transform(image)
    torch.manual_seed(123)
    assert torch.equal(first, transform(image))


@pytest.mark.parametrize("stage", [s for s in AUGMENTATIONS if s != "eval"])
def test_train_transform_is_random(stage: str, image: Image.Image) -> None:
    transform = build_transform(stage, 64, train=True)
    torch.manual_seed(0)
    views = [transform(image) for _ in range(6)]
    assert any(not torch.equal(views[0], v) for v in views[1:])


@pytest.mark.parametrize("stage", list(AUGMENTATIONS))
def test_eval_transform_is_deterministic(stage: str, image: Image.Image) -> None:
    transform = build_transform(stage, 64, train=False)
    torch.manual_seed(0)
    first = transform(image)
    torch.manual_seed(1)
    assert torch.equal(first, transform(image))
    assert torch.equal(first, build_transform(stage, 64, train=False)(image))


def test_eval_stage_ignores_train(image: Image.Image) -> None:
    torch.manual_seed(0)
    assert torch.equal(build_transform("eval", 64, True)(image), build_transform("eval", 64, False)(image))


def test_two_crops_gives_two_different_views(image: Image.Image) -> None:
    torch.manual_seed(0)
    query, key = build_two_crops("b_moco_v2", 64)(image)
    assert query.shape == key.shape == (3, 64, 64)
    assert not torch.equal(query, key)


def test_two_crops_wraps_any_callable() -> None:
    calls = iter(range(10))
    pair = TwoCrops(lambda _image: torch.tensor(next(calls)))(None)
    assert [int(t) for t in pair] == [0, 1]


@pytest.mark.parametrize("stage", SSL_STAGES)
def test_two_crops_for_each_contrastive_stage(stage: str, image: Image.Image) -> None:
    torch.manual_seed(0)
    query, key = build_two_crops(stage, 64)(image)
    assert query.shape == key.shape == (3, 64, 64)


def test_grayscale_input_gives_three_channels() -> None:
    gray = Image.fromarray(np.full((80, 100), 128, np.uint8))  # mode L
    assert build_transform("eval", 64)(gray).shape == (3, 64, 64)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_to_normalized_tensor_is_torchvisions_three_steps_bit_for_bit(mode: str, image: Image.Image) -> None:
    img = image.convert(mode)
    steps = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.equal(ToNormalizedTensor()(img), v2.Compose(steps)(img))
    assert torch.equal(ToNormalizedTensor(normalize=False)(img), v2.Compose(steps[:2])(img))


def test_to_normalized_tensor_refuses_what_is_not_an_image() -> None:
    with pytest.raises(TypeError, match="takes a PIL image, got Tensor"):
        ToNormalizedTensor()(torch.zeros(3, 8, 8))


def test_constant_image_normalises_to_imagenet_offsets() -> None:
    black = Image.new("RGB", (100, 100))
    x = build_transform("eval", 32, train=False)(black)
    expected = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, (0.229, 0.224, 0.225), strict=True)])
    assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-6)


def test_sizes_scale_from_224() -> None:
    # A sec. 6.2: scale to 256, crop 224; at s px: round(s * 256 / 224), crop s
    assert cache_spec("a_stl_n", 224) == (256, "square")
    assert cache_spec("a_stl_n", 64) == (73, "square")
    assert cache_spec("a_stl_n", 128) == (146, "square")
    assert cache_spec("eval", 224, train=True) == (256, "square")
    # B sec. IV-A: CT images resized to 224 x 224 for evaluation
    assert cache_spec("b_supervised", 224, train=False) == (224, "square")
    assert cache_spec("a_stl_m", 64) == (64, "center_crop")


def _step(transform, kind: type):
    """The first step of ``kind`` in a Compose, looking inside RandomApply."""
    for step in transform.transforms:
        inner = step.transforms if isinstance(step, v2.RandomApply) else [step]
        for t in inner:
            if isinstance(t, kind):
                return t, step
    raise AssertionError(f"no {kind.__name__} in {transform}")


def test_b_supervised_values_match_paper() -> None:
    # B sec. IV-B: random crop with scale 0.5, horizontal flip, brightness and contrast 0.2
    t = build_transform("b_supervised", 224)
    crop, _ = _step(t, v2.RandomResizedCrop)
    assert crop.scale == (0.5, 1.0) and crop.size == (224, 224)
    jitter, _ = _step(t, v2.ColorJitter)
    assert jitter.brightness == (0.8, 1.2) and jitter.contrast == (0.8, 1.2)
    assert jitter.saturation is None and jitter.hue is None
    assert _step(t, v2.RandomHorizontalFlip)[0].p == 0.5


def test_moco_v2_values_match_paper() -> None:
    # B sec. IV-E-2 / MoCo v2: crop area (0.2, 1), jitter 0.4/0.4/0.4/0.1 p=0.8, gray p=0.2,
    # blur sigma (0.1, 2) p=0.5, flip
    t = build_transform("b_moco_v2", 224)
    assert _step(t, v2.RandomResizedCrop)[0].scale == (0.2, 1.0)
    jitter, wrapper = _step(t, v2.ColorJitter)
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.6, 1.4),) * 3
    assert jitter.hue == (-0.1, 0.1) and wrapper.p == 0.8
    assert _step(t, v2.RandomGrayscale)[0].p == 0.2
    blur, wrapper = _step(t, v2.GaussianBlur)
    assert blur.sigma == pytest.approx([0.1, 2.0]) and blur.kernel_size == (23, 23) and wrapper.p == 0.5


def test_blur_sigma_scales_with_image_size() -> None:
    blur, _ = _step(build_transform("b_moco_v2", 112), v2.GaussianBlur)
    assert blur.sigma == pytest.approx([0.05, 1.0])


def test_a_sstl_m_is_mocos_scheme_by_default() -> None:
    # A sec. 6.2: SSTL-M follows "the same data augmentation scheme as in [26]" (MoCo v1)
    sstl_m = AUGMENTATIONS["a_sstl_m"]
    assert sstl_m == dataclasses.replace(AUGMENTATIONS["a_moco_v1"], source=sstl_m.source)
    t = build_transform("a_sstl_m", 224)
    crop, _ = _step(t, v2.RandomResizedCrop)
    assert crop.scale == (0.2, 1.0) and crop.size == (224, 224)
    jitter, _ = _step(t, v2.ColorJitter)
    assert jitter.brightness == (0.6, 1.4) and jitter.hue == (-0.4, 0.4)
    assert _step(t, v2.RandomGrayscale)[0].p == 0.2
    assert _step(t, v2.RandomHorizontalFlip)[0].p == 0.5
    assert not any(isinstance(step, v2.RandomCrop) for step in t.transforms)


def test_a_sstl_m_literal_values_match_paper() -> None:
    # A sec. 6.2 as worded: 256 -> random 224 crop; jitter, flip, grayscale each with p = 0.5
    t = build_transform("a_sstl_m_literal", 224)
    assert _step(t, v2.RandomCrop)[0].size == (224, 224)
    assert _step(t, v2.ColorJitter)[1].p == 0.5
    assert _step(t, v2.RandomHorizontalFlip)[0].p == 0.5
    assert _step(t, v2.RandomGrayscale)[0].p == 0.5
    # A's fine-tuning uses "the same" augmentation, read literally
    assert dataclasses.replace(AUGMENTATIONS["a_finetune"], source="") == dataclasses.replace(
        AUGMENTATIONS["a_sstl_m_literal"], source="")


@pytest.mark.parametrize("stage", SSL_STAGES)
def test_region_views_are_five_random_augmented_crops(stage: str, image: Image.Image) -> None:
    views = build_region_views(stage, 32)
    torch.manual_seed(0)
    first, boxes = views.sample(image)
    assert first.shape == (5, 3, 32, 32) and first.dtype == torch.float32 and torch.isfinite(first).all()
    side = views.base.size
    assert list(boxes) == ["ru", "rm", "rl", "lu", "ll"]
    assert all(0 <= t < b <= side and 0 <= left < r <= side for t, left, b, r in boxes.values())
    torch.manual_seed(0)
    assert torch.equal(first, views(image))  # seeded by torch's global generator, like the transforms
    assert not torch.equal(first, views(image))
    recipe = AUGMENTATIONS[stage]
    if recipe.crop == "random_resized":
        assert views.scale == recipe.crop_scale and views.ratio == REGION_RATIO
    else:  # a fixed-size crop: square boxes of the image crop's area fraction
        assert views.ratio == (1.0, 1.0) and views.scale[0] == views.scale[1] == pytest.approx((32 / side) ** 2)
        assert all(b - t == r - left for t, left, b, r in boxes.values())


def test_region_views_need_a_training_augmentation() -> None:
    with pytest.raises(ValueError, match="region views need a training augmentation, got 'eval'"):
        build_region_views("eval", 32)


def test_moco_v1_puts_grayscale_before_jitter() -> None:
    kinds = [type(s).__name__ for s in build_transform("a_moco_v1", 64).transforms]
    assert kinds.index("RandomGrayscale") < kinds.index("ColorJitter")


def test_unknown_stage_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'imagenet'.*a_stl_n.*b_moco_v2"):
        build_transform("imagenet", 64)


@pytest.mark.parametrize("size", [0, -64, 8, 64.0, "64", True, None])
def test_bad_image_size_raises(size) -> None:
    with pytest.raises(ValueError, match="image_size must be an int"):
        build_transform("eval", size)
