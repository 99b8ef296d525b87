"""Self-supervised methods: losses against their formulas, MoCo's mechanics, A's Generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from toy import ToyImages, ToyViews, toy_ct_slice

from covtl.data import synth
from covtl.data.transforms import build_region_views, build_transform
from covtl.losses import info_nce, nt_xent, region_loss
from covtl.models import build_model
from covtl.recipes import get_recipe
from covtl.regions import REGIONS, boundary_map, crop_regions, lung_box, region_boxes
from covtl.ssl import SSL_METHODS, MoCo, RegionMoCo, _split_forward, build_ssl
from covtl.train import TrainConfig, fit, seed_everything


def slow_info_nce(q, k, queue, t):
    """A eq. (2) with loops: -log exp(q.k+/t) / (exp(q.k+/t) + sum_i exp(q.k_i/t)), averaged."""
    losses = []
    for n in range(q.shape[0]):
        pos = math.exp(float(q[n] @ k[n]) / t)
        neg = sum(math.exp(float(q[n] @ queue[i]) / t) for i in range(queue.shape[0]))
        losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_matches_the_formula():
    q, k, queue = unit(4, 8, seed=0), unit(4, 8, seed=1), unit(6, 8, seed=2)
    assert float(info_nce(q, k, queue, 0.07)) == pytest.approx(slow_info_nce(q, k, queue, 0.07), rel=1e-5)


def test_info_nce_with_identical_keys_is_log_k_plus_1():
    q = unit(3, 8)
    queue = q[0].expand(10, 8)
    k = q[0].expand(3, 8)
    same = q[0].expand(3, 8)  # every key equals the query: all 11 logits tie
    assert float(info_nce(same, k, queue, 0.2)) == pytest.approx(-math.log(1 / 11))


def test_nt_xent_matches_the_formula():
    z1, z2 = unit(3, 5, seed=3), unit(3, 5, seed=4)
    z = torch.cat([z1, z2])
    t = 0.5
    losses = []
    for i in range(6):
        j = (i + 3) % 6
        denom = sum(math.exp(float(z[i] @ z[m]) / t) for m in range(6) if m != i)
        losses.append(-math.log(math.exp(float(z[i] @ z[j]) / t) / denom))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(sum(losses) / 6, rel=1e-5)


def test_region_loss_is_the_sum_of_five_cross_entropies():
    logits = torch.randn(2, 5, 5, generator=torch.Generator().manual_seed(0))
    expected = [
        sum(F.cross_entropy(logits[n, i : i + 1], torch.tensor([i])) for i in range(5)) for n in range(2)
    ]
    torch.testing.assert_close(region_loss(logits, reduction="none"), torch.stack(expected))
    torch.testing.assert_close(region_loss(logits), torch.stack(expected).mean())
    with pytest.raises(ValueError, match="N x R x R"):
        region_loss(torch.randn(2, 5, 4))


def moco(queue_size=5, **kw):
    torch.manual_seed(0)
    return MoCo(build_model("crnet", num_classes=2), dim=4, queue_size=queue_size, **kw)


def test_queue_is_fifo_and_wraps_around():
    m = moco(queue_size=5)
    a, b = unit(3, 4, seed=1), unit(3, 4, seed=2)
    m._dequeue_and_enqueue(a)
    m._dequeue_and_enqueue(b)
    assert int(m.queue_ptr) == 1
    torch.testing.assert_close(m.queue[:3][[0]], b[[2]])  # slot 0 wrapped: b's last key
    torch.testing.assert_close(m.queue[1:3], a[1:3])
    torch.testing.assert_close(m.queue[3:5], b[:2])
    big = unit(7, 4, seed=3)  # more keys than the queue: the newest 5 stay
    m._dequeue_and_enqueue(big)
    assert sorted(map(tuple, m.queue.tolist())) == sorted(map(tuple, big[2:].tolist()))
    assert int(m.queue_ptr) == (1 + 7) % 5


def test_momentum_update_follows_the_formula():
    m = moco(momentum=0.9)
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(1.0)
    q = [p.clone() for p in m.model.parameters()]
    k = [p.clone() for p in m.key_model.parameters()]
    m._momentum_update_key_encoder()
    for pq, pk, new in zip(q, k, m.key_model.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * pk + 0.1 * pq)


def test_no_gradient_reaches_the_key_encoder():
    m = moco(queue_size=4)
    x = torch.randn(4, 3, 32, 32)
    m({"image": [x, x + 0.1]}).backward()
    assert all(p.grad is None and not p.requires_grad for p in m.key_model.parameters())
    assert all(p.grad is None for p in m.key_projector.parameters())
    assert m.model.fc.weight.grad is None  # the classifier head is not part of MoCo
    assert m.model.features[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_split_batch_norm_is_one_pass_per_virtual_device(arch):
    """MoCo's shuffled batch norm runs the convolutions once on the whole batch; it must compute
    what one forward pass per chunk computes: outputs, gradients and running statistics."""
    torch.manual_seed(0)
    net = build_model(arch, num_classes=2).train()
    twin = build_model(arch, num_classes=2).train()
    twin.load_state_dict(net.state_dict())
    x = torch.randn(5, 3, 32, 32)  # 5 in 2 chunks: 3 + 2, as x.chunk(2) cuts it
    split = _split_forward((net,), net.forward_features, x, 2)
    passes = torch.cat([twin.forward_features(c) for c in x.chunk(2)])
    torch.testing.assert_close(split, passes, rtol=1e-4, atol=1e-5)
    weights = torch.randn_like(split)
    (split * weights).sum().backward()
    (passes * weights).sum().backward()
    for (name, a), b in zip(net.named_parameters(), twin.parameters(), strict=True):
        if b.grad is not None:  # float32 sums in another order: equal to 1e-5 of the gradient's scale
            assert (a.grad - b.grad).abs().max() <= 1e-5 * b.grad.abs().max(), name
    for (name, a), b in zip(net.named_buffers(), twin.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)  # running stats, batch counts
    assert not any("forward" in vars(m) for m in net.modules())  # batch norm is itself again
    torch.testing.assert_close(net.forward_features(x), twin.forward_features(x), rtol=1e-4, atol=1e-5)


def test_split_batch_norm_leaves_the_network_as_it_was_when_a_pass_fails():
    net = build_model("resnet18", num_classes=2).train()

    def failing(x):
        net.forward_features(x)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        _split_forward((net,), failing, torch.randn(4, 3, 32, 32), 2)
    assert not any("forward" in vars(m) for m in net.modules())


def test_queue_larger_than_the_training_set_is_refused():
    with pytest.raises(ValueError, match="queue of 40 keys but only 32 training images"):
        moco(queue_size=40).check_train_set(ToyViews(32))


def test_boundary_map_definition_on_a_small_array():
    a = np.zeros((5, 6), dtype=np.uint8)
    a[1:4, 1:3] = 1
    expected = np.zeros((5, 6), dtype=bool)
    for i in range(5):
        for j in range(6):
            window = a[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            expected[i, j] = len(np.unique(window)) > 1
    np.testing.assert_array_equal(boundary_map(a), expected)
    assert not boundary_map(np.ones((4, 4))).any()


def test_five_crops_lie_inside_the_lung_box_of_a_ct_slice():
    x = toy_ct_slice(64)
    box = lung_box(x.numpy())
    assert box.found
    # the toy lungs span x in [-0.7, 0.7], y in [-0.5, 0.5] of [-1, 1]: pixels ~[10, 54] x [16, 48]
    assert abs(box.left - 10) <= 2 and abs(box.right - 54) <= 2
    assert abs(box.top - 16) <= 2 and abs(box.bottom - 48) <= 2
    boxes = region_boxes(box, 64, 64)
    assert list(boxes) == list(REGIONS)
    for top, left, bottom, right in boxes.values():
        assert box.top <= top < bottom <= box.bottom and box.left <= left < right <= box.right
    assert boxes["ru"][1] < boxes["lu"][1] and boxes["ru"][0] < boxes["rl"][0]
    crops = crop_regions(x, size=32)
    assert crops.shape == (5, 3, 32, 32)


def test_lung_box_falls_back_to_the_centre_when_there_are_no_lungs():
    box = lung_box(np.ones((3, 40, 40), dtype=np.float32))
    assert not box.found and (box.top, box.left, box.bottom, box.right) == (4, 4, 36, 36)


@pytest.fixture(scope="module")
def ct_slices() -> list[Image.Image]:
    """Synthetic CT slices of varied anatomy (covtl.data.synth), as the datasets store them."""
    rng = np.random.default_rng(0)
    slices = []
    for i in range(60):
        patient = synth.sample_ct_patient(rng, ("normal", "covid", "lobar")[i % 3], size=96)
        sl = synth.render_ct_slice(rng, patient, level=rng.uniform(0.3, 0.8))
        slices.append(Image.fromarray(sl.image).convert("RGB"))
    return slices


def shape_features(boxes: dict, side: int) -> list[list[float]]:
    """Per region box (top, left, bottom, right): log aspect ratio and log area relative to the image."""
    return [[math.log((r - left) / (b - t)), math.log((b - t) * (r - left) / side**2)]
            for t, left, b, r in boxes.values()]


def held_out_accuracy(features: list, labels: list) -> float:
    """Accuracy of a multinomial logistic regression (quadratic in the features) on a held-out third."""
    x_tr, x_te, y_tr, y_te = train_test_split(np.array(features), np.array(labels), test_size=1 / 3,
                                              random_state=0, stratify=labels)
    clf = make_pipeline(PolynomialFeatures(2), StandardScaler(), LogisticRegression(max_iter=5000))
    return clf.fit(x_tr, y_tr).score(x_te, y_te)


def test_fixed_region_crops_give_the_region_away_by_their_shape(ct_slices):
    """The shortcut: the paper's five boxes, cut from the un-augmented image, differ in shape."""
    plain = build_transform("eval", 64, train=False)  # the image the regions used to be cut from
    features, labels = [], []
    for image in ct_slices:
        x = plain(image)
        features += shape_features(region_boxes(lung_box(x.numpy()), 64, 64), 64)
        labels += list(range(5))
    assert held_out_accuracy(features, labels) > 0.6  # chance: 0.2


@pytest.mark.parametrize("stage", ["a_sstl_m", "a_sstl_m_literal"])
def test_augmented_region_crops_do_not_give_the_region_away(ct_slices, stage):
    """A's region task as covtl trains it: the shape of a crop's source box says nothing of its region."""
    views = build_region_views(stage, 64)
    torch.manual_seed(0)
    features, labels = [], []
    for image in ct_slices:
        for _ in range(3):
            crops, boxes = views.sample(image)
            features += shape_features(boxes, views.base.size)
            labels += list(range(5))
    assert crops.shape == (5, 3, 64, 64)
    assert held_out_accuracy(features, labels) < 0.35  # chance: 0.2


def test_region_moco_without_region_weight_is_scaled_moco():
    """alpha2 = 0: the regions are never encoded and the loss is alpha1 times MoCo's."""
    batch = ToyViews(4)
    views = [torch.stack([batch[i]["image"][v] for i in range(4)]) for v in range(2)]
    torch.manual_seed(0)
    plain = MoCo(build_model("crnet", num_classes=2), dim=4, queue_size=8)
    torch.manual_seed(0)
    ours = RegionMoCo(build_model("crnet", num_classes=2), dim=4, queue_size=8, alpha1=0.8, alpha2=0.0)
    assert ours.region_head is None  # no region classifier: no unused parameters under DDP
    encoded = []
    features = ours.model.forward_features

    def counting(x):
        encoded.append(x.shape[0])
        return features(x)

    ours.model.forward_features = counting
    torch.manual_seed(1)
    expected = plain({"image": views})
    torch.manual_seed(1)
    loss = ours({"image": views})  # the two views only: the pipeline cuts no regions at weight 0
    torch.testing.assert_close(loss, 0.8 * expected)
    assert sum(encoded) == 4  # the queries only; no 4 x 5 region crops
    with pytest.raises(ValueError, match="alpha2 = 0"):
        ours.region_logits(torch.zeros(1, 5, 3, 32, 32))
    with pytest.raises(ValueError, match="alpha1 and alpha2 must be >= 0"):
        RegionMoCo(build_model("crnet", num_classes=2), dim=4, queue_size=8, alpha2=-1.0)


@pytest.mark.parametrize("region_term", ["eq6", "mean"])
def test_region_moco_loss_is_equation_6(region_term):
    torch.manual_seed(0)
    m = RegionMoCo(build_model("crnet", num_classes=2), dim=4, queue_size=8, region_term=region_term)
    batch = ToyViews(3, regions=True)
    items = [batch[i] for i in range(3)]
    views = [torch.stack([it["image"][v] for it in items]) for v in range(3)]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    loss = m({"image": views})
    m.load_state_dict(state)  # replay the same step by hand
    l_cons, _ = m.contrastive_loss(views[0], views[1])
    l_ra = region_loss(m.region_logits(views[2]), reduction="none")
    if region_term == "eq6":  # per image: a1 Lcons + a2 (Lra + sum over the other images' Lra)
        terms = [
            0.8 * l_cons[b] + 0.8 * (l_ra[b] + sum(l_ra[i] for i in range(3) if i != b)) for b in range(3)
        ]
    else:  # every image's region loss counted once
        terms = [0.8 * l_cons[b] + 0.8 * l_ra[b] for b in range(3)]
    # float32 sums of terms near 20 in another order: agree to a few parts in 1e5
    torch.testing.assert_close(loss, sum(terms) / 3, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", list(SSL_METHODS))
def test_a_few_epochs_lower_each_methods_loss(tmp_path, method):
    seed_everything(0)
    model = build_model("crnet", num_classes=2)
    extra = {"queue_size": 16, "dim": 16} if "moco" in method else {}
    if method == "simclr":
        extra = {"hidden": 64, "dim": 16}
    if method == "moco_v2":
        extra["mlp_hidden"] = 64
    task = build_ssl(method, model, **extra)
    # SimCLR collapses to the uniform loss log(2N - 1) at lr 0.05 on this toy set; 0.01 learns
    lr = 0.01 if method == "simclr" else 0.05
    recipe = get_recipe("b_moco").replace(epochs=5, batch_size=8, image_size=32, cosine_period=5, lr=lr)
    # rotation needs images that are not symmetric under rotation (the toy slices nearly are)
    regions = method == "a_region_moco"
    data = ToyImages(24, augment=True) if method == "rotation" else ToyViews(24, regions=regions)
    result = fit(task, recipe, TrainConfig(out_dir=tmp_path / method, n_boot=10), data)
    losses = [h["train_loss"] for h in result["history"]]
    # epoch 1 is MoCo's warm-up: its queue starts as random keys (easy negatives) and fills
    # with real ones during that epoch, so descent is measured from epoch 2 on
    assert np.mean(losses[-2:]) < losses[1], losses
    # the checkpoint hands the pretrained network on to fine-tuning
    from covtl.train import handoff

    fine = handoff("crnet", num_classes=2, checkpoint=tmp_path / method / "last.pt")
    torch.testing.assert_close(fine.features[0].weight, task.model.features[0].weight)


def test_literal_equation_6_diverges_where_the_mean_trains(tmp_path):
    """Documents why region_term="mean" is the default (see RegionMoCo)."""
    recipe = get_recipe("b_moco").replace(epochs=4, batch_size=8, image_size=32, cosine_period=4, lr=0.05)
    with pytest.raises(FloatingPointError, match="not finite"):
        seed_everything(0)
        task = build_ssl("a_region_moco", build_model("crnet", num_classes=2), queue_size=16, dim=16,
                         region_term="eq6")
        fit(task, recipe, TrainConfig(out_dir=tmp_path / "eq6"), ToyViews(24, regions=True))


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown SSL method 'byol'.*moco_v2"):
        build_ssl("byol", build_model("crnet"))
