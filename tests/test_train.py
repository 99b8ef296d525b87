"""The training engine: recipes, hand-off, determinism, resume, distributed, errors."""

from __future__ import annotations

import copy
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from toy import ToyImages

from covtl.models import build_model
from covtl.profiles import PROFILES, get_profile
from covtl.recipes import RECIPES, get_recipe, scale_recipe
from covtl.train import (
    FinishedRunError,
    TrainConfig,
    build_optimizer,
    fit,
    handoff,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    steps_per_epoch,
)

TESTS = Path(__file__).resolve().parent


def tiny_recipe(**changes):
    base = get_recipe("b_transfer").replace(epochs=3, batch_size=8, image_size=32, cosine_period=2)
    return base.replace(**changes)


def run(tmp, name="run", recipe=None, train=None, seed=0, **cfg):
    seed_everything(seed)  # the initial weights come from the seed too
    model = build_model("crnet", num_classes=2)
    arch = {"name": "crnet", "n_attn": 0, "num_classes": 2}
    cfg = TrainConfig(out_dir=tmp / name, seed=seed, arch=arch, n_boot=50, **cfg)
    return fit(model, recipe or tiny_recipe(), cfg, train or ToyImages(24, augment=True),
               ToyImages(8, seed=1), ToyImages(10, seed=2))


def comparable(result):
    return {k: result[k] for k in ("history", "best_val", "test")}


def test_recipes_hold_the_papers_values():
    a = RECIPES["a_stl_n"]
    assert (a.optimizer, a.lr, a.momentum, a.weight_decay, a.step_size, a.gamma, a.epochs, a.batch_size,
            a.dropout) == ("sgd", 0.1, 0.9, 1e-4, 30, 0.1, 90, 512, 0.8)
    m = RECIPES["a_stl_m"]
    assert (m.optimizer, m.lr, m.dropout, m.epochs, m.batch_size) == ("sgd", 2e-4, 0.5, 30, 64)
    f = RECIPES["a_finetune"]
    assert (f.lr, f.momentum, f.weight_decay, f.milestones, f.epochs, f.batch_size) == (
        0.3, 0.9, 1e-4, (120, 160), 200, 256)
    for name in ("b_random_init", "b_transfer", "b_transfer_frozen", "b_rotation_joint"):
        b = RECIPES[name]
        assert (b.optimizer, b.lr, b.batch_size, b.schedule, b.cosine_period, b.epochs) == (
            "adam", 1e-4, 16, "cosine", 10, 50)
    assert RECIPES["b_random_init"].kaiming_init and not RECIPES["b_transfer"].kaiming_init
    assert RECIPES["b_transfer_frozen"].freeze_backbone and RECIPES["b_rotation_joint"].rotation_aux
    with pytest.raises(ValueError, match="unknown recipe 'x'.*a_stl_n"):
        get_recipe("x")


def test_profiles_scale_and_paper_changes_nothing():
    f = RECIPES["a_finetune"]
    assert scale_recipe(f, "paper") is f
    quick = get_profile("quick")
    q = scale_recipe(f, "quick")
    e = quick.epochs["a_finetune"]
    assert q.image_size == quick.image_size and q.batch_size == 32 and q.epochs == e
    assert q.milestones == (round(120 * e / 200), round(160 * e / 200)) and q.lr == pytest.approx(0.3 * 32 / 256)
    b = scale_recipe(RECIPES["b_transfer"], "quick")
    assert b.lr == 1e-4 and b.batch_size == 16 and b.cosine_period == pytest.approx(10 * b.epochs / 50)
    lrs = b.lr_schedule(20)  # five half periods, as B's 10 of 50 epochs: the run ends annealed
    assert lrs[-1] < 0.01 * b.lr
    assert scale_recipe(f, "smoke").max_steps_per_epoch == 2
    with pytest.raises(ValueError, match="unknown profile"):
        scale_recipe(f, "huge")


def test_every_profile_gives_every_recipe_its_epochs():
    for profile in PROFILES.values():
        for recipe in RECIPES.values():
            scaled = scale_recipe(recipe, profile)
            assert 1 <= scaled.epochs <= recipe.epochs, (profile.name, recipe.name)
    with pytest.raises(ValueError, match="no epoch count for recipe 'x'"):
        get_profile("quick").epochs_for("x")


@pytest.mark.parametrize("profile", list(PROFILES))
def test_no_optimisation_step_runs_at_lr_zero(profile):
    """Defect: a scaled cosine period of 1-2 epochs stepped per epoch hit exactly lr 0 for
    whole epochs (quick: one of two; cpu: epochs 2 and 6 of 10)."""
    for recipe in RECIPES.values():
        r = scale_recipe(recipe, profile)
        for spe in {1, 2, 3, 7, steps_per_epoch(425, r, full_batches=False)}:
            lrs = r.lr_schedule(spe)
            assert len(lrs) == r.epochs * spe and min(lrs) > 0, (profile, r.name, spe)


def test_scaled_sgd_warms_up_and_adam_does_not():
    a = scale_recipe(RECIPES["a_finetune"], "cpu")
    assert a.warmup_epochs == 5 and scale_recipe(RECIPES["a_finetune"], "smoke").warmup_epochs == 0.5
    lrs = a.lr_schedule(10)
    assert lrs[0] < lrs[5] < lrs[int(10 * a.warmup_epochs)] == pytest.approx(a.lr)
    assert scale_recipe(RECIPES["b_transfer"], "cpu").warmup_epochs == 0
    assert RECIPES["a_finetune"].warmup_epochs == 0  # the paper profile: as the paper gives it


@pytest.mark.parametrize("recipe", ["b_transfer", "a_finetune"])  # Adam, SGD with momentum
def test_the_fused_optimizer_makes_the_per_tensor_loops_update(recipe):
    recipe = RECIPES[recipe]
    torch.manual_seed(0)
    net = build_model("resnet18", num_classes=2)
    twin = copy.deepcopy(net)
    start = twin.fc.weight.detach().clone()
    fused = build_optimizer(net.parameters(), recipe)
    if not fused.defaults["fused"]:
        pytest.skip(f"torch {torch.__version__} has no fused CPU kernel for {recipe.optimizer}")
    assert (fused.defaults["lr"], fused.defaults["weight_decay"]) == (recipe.lr, recipe.weight_decay)
    loop = build_optimizer(twin.parameters(), recipe)
    for group in loop.param_groups:  # torch's per-tensor loop, as before the fused kernel
        group["fused"], group["foreach"] = False, False
    for _ in range(5):
        grads = [torch.randn_like(p) for p in net.parameters()]
        for model, opt in ((net, fused), (twin, loop)):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    assert not torch.equal(twin.fc.weight, start)  # the updates did something
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # the same rule, to rounding


def test_without_a_fused_kernel_the_optimizer_falls_back_to_the_loop(monkeypatch):
    real = torch.optim.Adam

    def no_fused(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on a supported device")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    opt = build_optimizer(build_model("crnet", num_classes=2).parameters(), RECIPES["b_transfer"])
    assert not opt.defaults["fused"] and opt.defaults["lr"] == RECIPES["b_transfer"].lr
    with pytest.raises(ValueError, match="empty parameter list"):  # other errors still surface
        build_optimizer([], RECIPES["b_transfer"])


def test_engine_applies_the_schedule_per_step(tmp_path):
    recipe = tiny_recipe(epochs=4, cosine_period=1)  # per epoch this was lr 0 at epochs 2 and 4
    result = run(tmp_path, recipe=recipe)
    spe = steps_per_epoch(24, recipe, full_batches=False)
    expected = recipe.lr_schedule(spe)
    assert [h["steps"] for h in result["history"]] == [spe] * 4
    assert [h["lr"] for h in result["history"]] == pytest.approx(expected[::spe])
    assert min(h["lr_min"] for h in result["history"]) == pytest.approx(min(expected)) and min(expected) > 0


def test_supervised_epochs_see_every_labelled_image(tmp_path):
    """Defect: drop_last threw away labelled images (425 images at batch 256: 169 unseen)."""
    result = run(tmp_path, recipe=tiny_recipe(epochs=1, batch_size=10), train=ToyImages(25, augment=True))
    assert result["history"][0]["images"] == 25 and result["history"][0]["steps"] == 3
    assert steps_per_epoch(425, RECIPES["b_transfer"].replace(batch_size=256), full_batches=False) == 2
    # a lone last image is dropped (batch norm cannot normalise one sample) ...
    assert steps_per_epoch(21, tiny_recipe(batch_size=10), full_batches=False) == 2
    # ... and the self-supervised tasks keep full batches
    assert steps_per_epoch(425, RECIPES["b_moco"].replace(batch_size=256), full_batches=True) == 1


@pytest.mark.parametrize("profile", list(PROFILES))
def test_random_init_networks_start_unsaturated(profile):
    """Defect: Kaiming (fan-out) on the classifier gave initial cross-entropies of 11-31."""
    from covtl.train import Classification, kaiming_init

    prof = get_profile(profile)
    size = scale_recipe(RECIPES["b_random_init"], profile).image_size
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 3, size, size, generator=g), torch.arange(16) % 2
    for name in sorted(set(prof.backbones.values())):
        if name in ("resnet101", "vgg16", "densenet169", "efficientnet_b1") and size > 64:
            x_, size_ = x[:, :, :64, :64], 64  # the same init; a smaller image keeps the test fast
        else:
            x_, size_ = x, size
        for n_attn, kaiming in itertools.product((0, 5) if name.startswith("resnet") else (0,), (True, False)):
            seed_everything(0)  # B's random init (Kaiming) and A's "w/o TL" (the builder's own init)
            net = build_model(name, num_classes=2, n_attn=n_attn)
            if kaiming:
                kaiming_init(net)
            with torch.no_grad():
                loss = float(Classification(net).train()({"image": x_, "label": y}))
            assert loss < 1.0, (profile, name, n_attn, kaiming, size_, loss)


def test_training_writes_a_complete_record_and_learns(tmp_path):
    result = run(tmp_path, recipe=tiny_recipe(epochs=4, lr=3e-3))
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"last.pt", "best.pt", "history.json", "metrics.json",
                                                "predictions.csv"}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["history"] == result["history"] and len(saved["history"]) == 4
    assert saved["history"][-1]["train_loss"] < saved["history"][0]["train_loss"]
    # where the wall time went, kept out of the history (which must compare equal across runs)
    assert set(saved["timing"]) == {"data_s", "step_s", "val_s", "checkpoint_s", "test_s"}
    assert saved["timing"]["step_s"] > 0 and min(saved["timing"].values()) >= 0
    assert not any(k.endswith("_s") for h in saved["history"] for k in h)
    test = saved["test"]["last"]
    assert set(test["covid_positive"]) == {"accuracy", "precision", "recall", "f1", "auc"}
    assert test["n_images"] == 10 and test["n_patients"] == 5
    assert "best_val" in saved["test"] and saved["provenance"]["seed"] == 0


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    a, b = run(tmp_path, "a"), run(tmp_path, "b")
    assert comparable(a) == comparable(b)
    c = run(tmp_path, "c", seed=1)
    assert c["history"] != a["history"]


def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full")
    # killed in the middle of the second epoch (24 images per epoch; 24 + 10 reads)
    with pytest.raises(KeyboardInterrupt):  # a checkpoint after every epoch
        run(tmp_path, "resumed", train=ToyImages(24, augment=True, fail_at=34), checkpoint_every_s=0)
    ckpt = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert ckpt["epoch"] == 0 and not (tmp_path / "resumed" / "metrics.json").exists()
    resumed = run(tmp_path, "resumed")
    assert comparable(resumed) == comparable(full)


def test_a_run_resumes_from_its_last_written_checkpoint_whatever_the_cadence(tmp_path):
    """With checkpoints an hour apart, a run killed in its third epoch has written none: it starts
    again and still ends exactly as an uninterrupted run; best.pt is written with last.pt."""
    full = run(tmp_path, "full", checkpoint_every_s=0)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "resumed", train=ToyImages(24, augment=True, fail_at=58), checkpoint_every_s=3600)
    assert not (tmp_path / "resumed" / "last.pt").exists() and not (tmp_path / "resumed" / "best.pt").exists()
    resumed = run(tmp_path, "resumed", checkpoint_every_s=3600)
    assert comparable(resumed) == comparable(full)
    best = load_checkpoint(tmp_path / "resumed" / "best.pt")
    assert best["epoch"] == resumed["best_val"]["epoch"] == full["best_val"]["epoch"]
    reference = load_checkpoint(tmp_path / "full" / "best.pt")["model"]
    assert all(torch.equal(v, reference[k]) for k, v in best["model"].items())


def test_a_finished_run_is_not_overwritten(tmp_path):
    run(tmp_path)
    before = (tmp_path / "run" / "metrics.json").read_bytes()
    with pytest.raises(FinishedRunError, match="finished run"):
        run(tmp_path)
    assert (tmp_path / "run" / "metrics.json").read_bytes() == before
    run(tmp_path, overwrite=True)


def test_resuming_with_another_recipe_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, train=ToyImages(24, fail_at=30), checkpoint_every_s=0)
    with pytest.raises(ValueError, match="another recipe, seed or task"):
        run(tmp_path, recipe=tiny_recipe(lr=1.0))


def test_frozen_backbone_trains_only_the_head(tmp_path):
    model = build_model("crnet", num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, tiny_recipe(freeze_backbone=True, epochs=1), TrainConfig(out_dir=tmp_path / "f", n_boot=10),
        ToyImages(16))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}


def test_rotation_auxiliary_task_trains_jointly(tmp_path):
    result = run(tmp_path, recipe=tiny_recipe(rotation_aux=True, epochs=3, lr=3e-3))
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] and losses[0] > 1.2  # CT + 4-way rotation cross-entropies
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert set(ckpt["task"]) == {"rotation_head.weight", "rotation_head.bias"}
    assert not any(k.startswith("rotation") for k in ckpt["model"])


class _RecordingNet(torch.nn.Module):
    """A stub network that records the images its feature extractor and head receive."""

    feature_dim = 3

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)
        self.seen: list[tuple[str, torch.Tensor]] = []

    def forward_features(self, x):
        self.seen.append(("features", x.detach().clone()))
        return x[:, :, 0, 0]  # N x 3: the top-left pixels, which a rotation moves

    def forward_head(self, feats):
        self.seen.append(("head", feats.detach().clone()))
        return self.fc(feats)


def test_rotation_auxiliary_task_classifies_the_unrotated_images():
    """B Method 4: the CT classifier sees the images as they are, the rotation head rotated copies."""
    from covtl.train import Classification, rotate_batch

    x = torch.arange(4 * 3 * 5 * 5, dtype=torch.float32).reshape(4, 3, 5, 5)
    y = torch.tensor([0, 1, 0, 1])
    net = _RecordingNet()
    task = Classification(net, rotation_aux=True)
    torch.manual_seed(0)
    rotated, k = rotate_batch(x)
    assert not torch.equal(rotated, x)  # at least one image is rotated under this seed
    torch.manual_seed(0)
    loss = task({"image": x, "label": y})
    inputs = [t for kind, t in net.seen if kind == "features"]
    assert len(inputs) == 2 and any(torch.equal(t, x) for t in inputs) and any(torch.equal(t, rotated) for t in inputs)
    head = [t for kind, t in net.seen if kind == "head"]
    assert len(head) == 1 and torch.equal(head[0], x[:, :, 0, 0])  # classifier: unrotated features
    rot_feats = rotated[:, :, 0, 0]  # rotation head: features of the rotated copies
    expected = torch.nn.functional.cross_entropy(net.fc(x[:, :, 0, 0]), y) + \
        torch.nn.functional.cross_entropy(task.rotation_head(rot_feats), k)
    torch.testing.assert_close(loss, expected)
    # the other reading of B's text: one rotated batch feeds both heads
    net.seen.clear()
    literal = Classification(net, rotation_aux=True, classify_rotated=True)
    torch.manual_seed(0)
    literal({"image": x, "label": y})
    assert [kind for kind, _ in net.seen] == ["features", "head"] and torch.equal(net.seen[0][1], rotated)
    with pytest.raises(ValueError, match="classify_rotated=True needs rotation_aux=True"):
        Classification(net, classify_rotated=True)


def test_handoff_replaces_exactly_the_head(tmp_path):
    source = build_model("resnet18", num_classes=3, n_attn=1)
    path = tmp_path / "stl_m.pt"
    save_checkpoint(path, {"model": source.state_dict(), "arch": {"name": "resnet18"}})
    model = handoff("resnet18", num_classes=2, n_attn=1, checkpoint=path)
    assert model.load_report.head_reset == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(model.layer2.attn["1"].query.weight, source.layer2.attn["1"].query.weight)
    same = handoff("resnet18", num_classes=3, n_attn=1, checkpoint=path)
    torch.testing.assert_close(same.fc.weight, source.fc.weight)
    with pytest.raises(ValueError, match="no weights for"):
        handoff("resnet18", num_classes=2, n_attn=5, checkpoint=path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"model": {}, "arch": {"name": "crnet", "n_attn": 0, "num_classes": 2}})
    with pytest.raises(ValueError, match="was written for"):
        load_checkpoint(path, {"name": "resnet50", "n_attn": 5, "num_classes": 2})
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


DIST_SCRIPT = """
import sys, torch, torch.distributed as dist
from toy import ToyImages
from covtl.models import build_model
from covtl.recipes import get_recipe
from covtl.train import TrainConfig, fit
recipe = get_recipe("b_transfer").replace(epochs=2, batch_size=8, image_size=32, cosine_period=2)
model = build_model("crnet", num_classes=2)
fit(model, recipe, TrainConfig(out_dir=sys.argv[1], seed=0, n_boot=20), ToyImages(16), ToyImages(8, seed=1),
    ToyImages(8, seed=2))
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
both = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(both, flat)
assert torch.equal(both[0], both[1]), "replicas diverged"
print("rank", dist.get_rank(), "ok")
"""


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    script = tmp_path / "dist_fit.py"
    script.write_text(DIST_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok") == 2
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["config"]["world_size"] == 2 and len(saved["history"]) == 2


def test_results_do_not_depend_on_the_number_of_data_workers(tmp_path):
    # augmentation (ToyImages draws noise from torch's global generator) is seeded per sample
    # from (seed, epoch, index), so worker processes see the same randomness as the main one
    recipe = tiny_recipe(epochs=2, dropout=0.5)
    results = [comparable(run(tmp_path, f"w{n}", recipe=recipe, num_workers=n)) for n in (0, 2)]
    assert results[0] == results[1]


def test_auto_num_workers_is_0_on_cpu_and_shares_the_cores_on_cuda():
    from covtl.train import resolve_num_workers

    assert resolve_num_workers(-1, "cpu", {}, cores=16) == 0
    assert resolve_num_workers(3, "cpu", {}, cores=16) == 3  # an explicit count is kept
    assert resolve_num_workers(-1, "cuda", {}, cores=16) == 8
    assert resolve_num_workers(-1, "cuda:1", {"COVTL_JOBS": "4"}, cores=16) == 4
    assert resolve_num_workers(-1, "cuda", {"COVTL_JOBS": "4"}, cores=2) == 0
    with pytest.raises(ValueError, match="num_workers"):
        resolve_num_workers(-2, "cpu")


def test_launch_env_reads_torchrun_and_maps_slurm():
    from covtl.train import launch_env

    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert launch_env(torchrun) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}  # srun torchrun
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "MASTER_ADDR": "node1",
             "MASTER_PORT": "29500"}
    assert launch_env(slurm) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert launch_env({**slurm, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"})["WORLD_SIZE"] == "2"
    with pytest.raises(ValueError, match="MASTER_ADDR.*scontrol"):  # never 8 processes all acting as rank 0
        launch_env({k: v for k, v in slurm.items() if k != "MASTER_ADDR"})
    with pytest.raises(ValueError, match="MASTER_PORT"):
        launch_env({k: v for k, v in slurm.items() if k != "MASTER_PORT"})
    assert launch_env({}) == {}  # one process
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == {}  # one SLURM task: one process


@pytest.mark.slow
def test_two_slurm_tasks_without_torchrun_train_as_two_ranks(tmp_path):
    import socket

    script = tmp_path / "dist_fit.py"
    script.write_text(DIST_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    base.update(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1",
                SLURM_NTASKS="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "out")], text=True,
                              env={**base, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    assert sorted(out.strip().splitlines()[-1] for out, _ in outs) == ["rank 0 ok", "rank 1 ok"]
    epochs = [[ln for ln in out.splitlines() if ln.startswith("epoch ")] for out, _ in outs]
    assert sorted(map(len, epochs)) == [0, 2]  # one line per epoch, from rank 0 only
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["config"]["world_size"] == 2
