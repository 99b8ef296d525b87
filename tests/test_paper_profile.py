"""The paper profile is never run here; one full-size training step of each of its stages is.

For every distinct (stage, recipe, method, network) of ``build_plan("paper")``: the paper's
network at the paper's image size, the recipe's transform, optimiser and schedule, the SSL
method with the paper's settings (queue, head, temperature), one optimisation step on two
synthetic CT slices. Batch size is the one thing not full-size (a CPU cannot hold 256 images
of ResNet-101 activations); the recipes' batch sizes are checked against the papers in
tests/test_train.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from covtl.data.transforms import build_transform
from covtl.models import build_model
from covtl.recipes import get_recipe, scale_recipe
from covtl.ssl import SSL_METHODS, build_ssl
from covtl.stages import _SSLViews
from covtl.study import build_plan
from covtl.train import Classification, build_optimizer, build_scheduler, steps_per_epoch

NUM_CLASSES = {"stl_n": 1000, "stl_m": 3, "finetune": 2, "sstl_m": 2}


def _cases():
    """Each (stage, recipe, method) once, with its largest network, and every backbone once."""
    size = {"resnet101": 3, "resnet50": 2}
    by_stage: dict[tuple, tuple] = {}
    by_backbone: dict[str, tuple] = {}
    for run in build_plan("paper").runs:
        p = dict(run.params)
        if run.notebook not in NUM_CLASSES:
            continue
        case = (run.notebook, p["recipe"], p.get("method", ""), p["backbone"], p["n_attn"])
        stage = case[:3]
        rank = (size.get(case[3], 1), case[4])
        if stage not in by_stage or rank > (size.get(by_stage[stage][3], 1), by_stage[stage][4]):
            by_stage[stage] = case
        by_backbone.setdefault(case[3], case)
    return sorted(set(by_stage.values()) | set(by_backbone.values()))


def _ct_image(size: int = 300, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    img = np.where((xx / 0.9) ** 2 + (yy / 0.7) ** 2 < 1, 170, 0).astype(float)
    for cx in (-0.4, 0.4):
        img[((xx - cx) / 0.3) ** 2 + (yy / 0.5) ** 2 < 1] = 30
    return Image.fromarray(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)).convert("RGB")


@pytest.mark.slow
@pytest.mark.parametrize("case", _cases(), ids=lambda c: "-".join(str(x) for x in c if x != ""))
def test_one_full_size_step(case):
    notebook, recipe_name, method, backbone, n_attn = case
    recipe = get_recipe(recipe_name)
    assert scale_recipe(recipe, "paper") is recipe and recipe.image_size == 224
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=NUM_CLASSES[notebook], n_attn=n_attn, dropout=recipe.dropout)
    images = [_ct_image(seed=i) for i in range(2)]
    if notebook == "sstl_m":
        settings = SSL_METHODS[method][1]
        task = build_ssl(method, model)  # the paper's settings: queue, head, temperature
        assert all(getattr(task, k, v) == v for k, v in settings.items() if k in ("alpha1", "alpha2"))
        views = _SSLViews(recipe.augment, recipe.image_size, regions=method == "a_region_moco")
        per_image = [views(im) for im in images]
        batch = {"image": [torch.stack([v[i] for v in per_image]) for i in range(len(per_image[0]))]}
        assert batch["image"][0].shape == (2, 3, 224, 224)
    else:
        task = Classification(model, rotation_aux=recipe.rotation_aux)
        tf = build_transform(recipe.augment, recipe.image_size, train=True)
        batch = {"image": torch.stack([tf(im) for im in images]),
                 "label": torch.tensor([0, 1]) % NUM_CLASSES[notebook]}
        assert batch["image"].shape == (2, 3, 224, 224)
    opt = build_optimizer([p for p in task.parameters() if p.requires_grad], recipe)
    # COVID19-CT's 425 training images per epoch at the paper's batch (SSL: full batches only)
    sched = build_scheduler(opt, recipe, steps_per_epoch(425, recipe, full_batches=notebook == "sstl_m"))
    assert opt.param_groups[0]["lr"] > 0
    task.train()
    before = next(p for p in model.parameters() if p.requires_grad).detach().clone()
    loss = task(batch)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    after = next(p for p in model.parameters() if p.requires_grad).detach()
    assert not torch.equal(before, after), "the step changed nothing"
