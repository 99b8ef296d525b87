"""The training engine: every supervised stage of both papers (and, reused, the SSL methods).

One loop, nanoGPT-style: :func:`fit` trains a model on a dataset with a :class:`~covtl.recipes.Recipe`,
checkpointing after every epoch, and resumes from the last checkpoint when restarted. On a
CPU a resumed run ends with exactly the metrics of an uninterrupted one: every epoch draws
its randomness (shuffling, augmentation, dropout) from generators seeded by ``(seed, epoch)``,
so nothing depends on what ran before.

- Device: CUDA when available, else CPU (or ``device=...``); on CUDA, mixed precision and
  channels-last.
- Several processes: launched with ``torchrun``, the model is wrapped in
  DistributedDataParallel with a DistributedSampler; the global batch is the recipe's,
  split over processes; only rank 0 evaluates and writes.
- Model selection uses the validation split only (best val accuracy, ties broken by the
  lower val loss). The test split is scored once, after training, for the last-epoch and
  the best-val model, and reported separately.
- A finished run (``metrics.json`` present) is never overwritten unless ``overwrite=True``.

Datasets yield dicts with ``image`` (3 x s x s tensor), ``label`` (int), ``group`` (patient
id) and ``path``, as :mod:`covtl.data.datasets` does.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info
from tqdm import tqdm

from .io import write_json_atomic
from .metrics import binary_metrics, bootstrap_ci
from .provenance import provenance
from .recipes import Recipe

__all__ = [
    "Classification",
    "FinishedRunError",
    "TrainConfig",
    "fit",
    "handoff",
    "launch_env",
    "load_checkpoint",
    "resolve_device",
    "resolve_num_workers",
    "save_checkpoint",
    "seed_everything",
    "steps_per_epoch",
]

CHECKPOINT_VERSION = 1


class FinishedRunError(RuntimeError):
    """The output folder holds a finished run; covtl does not overwrite it silently."""


@dataclass
class TrainConfig:
    """Everything about a run that is not the recipe.

    Attributes:
        out_dir: where checkpoints (``last.pt``, ``best.pt``), ``history.json``,
            ``predictions.csv`` and ``metrics.json`` go.
        seed: the one seed behind every random generator of the run.
        arch: how the model was built (``name``, ``n_attn``, ``num_classes``); stored in
            checkpoints so a mismatched architecture is refused on load.
        device: ``None`` = CUDA if available, else CPU.
        num_workers: DataLoader worker processes; ``-1`` = auto (:func:`resolve_num_workers`).
            Results do not depend on it: each sample's augmentation is seeded from
            (seed, epoch, index).
        data: a description/fingerprint of the data, kept in the provenance.
        overwrite: replace a finished run in ``out_dir``.
        n_boot: bootstrap resamples for the test-set intervals.
        progress: ``None`` = a bar only when attached to a terminal and not in CI/papermill, and
            a line per epoch always; ``False``: neither.
        checkpoint_every_s: write ``last.pt`` (and ``best.pt``, when the best network changed)
            after an epoch only once this many seconds have passed since the last write, and
            always after the last epoch; 0 = after every epoch. Results do not depend on it: a
            run resumed from an older checkpoint repeats the same epochs exactly (every epoch's
            randomness comes from (seed, epoch)). The default keeps short cpu-profile epochs
            from spending a few percent of the run on writing 50-150 MB files, and loses at
            most a minute of work to an interruption.
    """

    out_dir: Path
    seed: int = 0
    arch: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    num_workers: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    n_boot: int = 1000
    progress: bool | None = None
    checkpoint_every_s: float = 60.0


# ---------------------------------------------------------------------------- environment


def resolve_device(device: str | None = None) -> torch.device:
    """The requested device, or CUDA (this process's local rank) when available, else CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def resolve_num_workers(num_workers: int, device: torch.device | str, environ: Mapping[str, str] | None = None,
                        cores: int | None = None) -> int:
    """DataLoader worker processes: ``num_workers``, or for ``-1`` (auto) 0 on CPU and
    ``min(8, cores // jobs)`` on CUDA.

    On CPU the training step already uses every core (and ``covtl study`` runs several
    notebooks at once), so decoding stays in the main process; on CUDA the GPU waits for the
    data, so the cores this notebook may use (``jobs`` = notebooks at once, ``COVTL_JOBS`` as
    set by ``covtl study``) decode in parallel.
    """
    if num_workers < -1:
        raise ValueError(f"num_workers must be -1 (auto), 0 (main process) or more, got {num_workers}")
    if num_workers >= 0:
        return num_workers
    if torch.device(device).type != "cuda":
        return 0
    environ = os.environ if environ is None else environ
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, int(environ.get("COVTL_JOBS", 1)))
    return min(8, cores // jobs)


def _sample_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class _SeededSamples(Dataset):
    """``ds[i]`` with its randomness (augmentation) drawn from ``(seed, i)`` alone.

    Before each read, Python's, NumPy's and torch's CPU generators are seeded from the epoch's
    seed and the sample's index, so a sample's augmentation does not depend on which process
    reads it, nor in which order: a run gives the same numbers for any ``num_workers``. In the
    main process (``num_workers=0``) the generators are restored after the read, so the
    training step's own randomness (dropout, rotations) is the same stream as with workers.
    """

    def __init__(self, ds: Dataset, seed: int) -> None:
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> Any:
        s = _sample_seed(self.seed, index)
        saved = None
        if get_worker_info() is None:
            saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
        random.seed(s)
        np.random.seed(s)
        torch.default_generator.manual_seed(s)
        try:
            return self.ds[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.random.set_rng_state(saved[2])


def _seed_worker(worker_id: int) -> None:  # DataLoader workers: derive from torch's per-worker seed
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _epoch_line(record: dict[str, Any], epochs: int, elapsed: float) -> str:
    """``epoch 3/30  train_loss 0.6124  val_loss 0.5980  val_acc 0.6780  lr 9.51e-05  41 s``."""
    parts = [f"epoch {record['epoch'] + 1}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    parts += [f"{k} {record[k]:.4f}" for k in ("val_loss", "val_acc") if k in record]
    parts += [f"lr {record['lr']:.2e}", f"{elapsed:.0f} s"]
    return "  ".join(parts)


def _show_progress(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    in_papermill = "PAPERMILL_INPUT_PATH" in os.environ or "papermill" in sys.modules
    return sys.stderr.isatty() and not os.environ.get("CI") and not in_papermill


def launch_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's place in a multi-process run: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``.

    - under ``torchrun`` (``WORLD_SIZE`` set): its variables, as they are;
    - under SLURM's ``srun`` without torchrun (``SLURM_PROCID`` and more than one task, from
      ``SLURM_STEP_NUM_TASKS`` or ``SLURM_NTASKS``): mapped from ``SLURM_PROCID``,
      ``SLURM_NTASKS`` and ``SLURM_LOCALID``; ``MASTER_ADDR`` and ``MASTER_PORT`` must be set
      (the first node's host name and a free port), otherwise a ``ValueError`` says so -- the
      tasks must never all act as rank 0 and write the same folder;
    - otherwise ``{}``: one process.
    """
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ:
        return {"RANK": environ.get("RANK", "0"), "WORLD_SIZE": environ["WORLD_SIZE"],
                "LOCAL_RANK": environ.get("LOCAL_RANK", "0")}
    ntasks = int(environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or 1)
    if "SLURM_PROCID" not in environ or ntasks <= 1:
        return {}
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(k)]
    if missing:
        raise ValueError(
            f"{ntasks} SLURM tasks but {' and '.join(missing)} not set: export "
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) and '
            "MASTER_PORT=29500 (any free port) before srun, or launch with srun torchrun (see README)"
        )
    return {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": str(ntasks),
            "LOCAL_RANK": environ.get("SLURM_LOCALID", "0")}


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group when launched by torchrun or srun.

    On CUDA each process first takes the GPU of its local rank (``torch.cuda.set_device``) and
    binds the group to it (``device_id``). A group initialised here is destroyed at exit.
    """
    launch = launch_env()
    world = int(launch.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        os.environ.update(launch)  # env:// rendezvous (and resolve_device) read them from here
        if torch.cuda.is_available():
            local = torch.device("cuda", int(launch["LOCAL_RANK"]))
            torch.cuda.set_device(local)
            dist.init_process_group("nccl", device_id=local)
        else:
            dist.init_process_group("gloo")
        atexit.register(_destroy_group)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _destroy_group() -> None:
    # at exit, not at the end of fit: callers (a stage's record, a test) still use the group after fit
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a covtl checkpoint (``weights_only=True``); refuse one of another architecture."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated or unsafe files raise several types
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a covtl checkpoint (no 'model' entry)")
    if arch is not None and ckpt.get("arch") and ckpt["arch"] != arch:
        raise ValueError(
            f"checkpoint {path} was written for {ckpt['arch']}, not {arch}; build the model with "
            "the checkpoint's architecture or start from another checkpoint"
        )
    return ckpt


# ---------------------------------------------------------------------------- model pieces


def kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal convolutions, zero biases (B: "Kaiming Initialization").

    Linear layers keep the init :func:`covtl.models.build_model` gave them (a small classifier):
    a fan-out Kaiming classifier over 512-2048 features gives initial logits with a standard
    deviation of 10-40 and a cross-entropy of 10-30 instead of ln 2, which a short Adam run at
    1e-4 never recovers from.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _trainable(task: nn.Module, recipe: Recipe) -> list[nn.Parameter]:
    """Parameters to optimise; with ``freeze_backbone`` the network's are frozen except its head."""
    if recipe.freeze_backbone:
        head = {id(p) for p in task.model.head.parameters()}
        for p in task.model.parameters():
            p.requires_grad_(id(p) in head)
    return [p for p in task.parameters() if p.requires_grad]


def _set_train_mode(task: nn.Module, recipe: Recipe) -> None:
    task.train()
    if recipe.freeze_backbone:  # a frozen extractor keeps its batch-norm statistics too
        for m in task.model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def build_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params``, with torch's fused kernel where it has one.

    The fused kernel updates every parameter in one pass over memory instead of several
    element-wise operations per tensor. Inside a training step on this project's CPU (one
    thread, batch 16; ``bench/optimizer.py`` prints the figures) Adam's update drops from
    48-109 ms to 22-35 ms (ResNet-18 and -50, 64 and 128 px), SGD's from 18-38 ms to 16-28 ms
    (about equal for ResNet-18 at 128 px). Same update rule; results agree with the per-tensor
    loop to rounding only (a relative 2e-7 after 20 steps), which training then amplifies, as
    any change of kernel does. Where fused kernels are missing (torch < 2.4 on CPU, SGD before
    2.5, other devices) the per-tensor loop is used.
    """
    params = list(params)
    if recipe.optimizer == "sgd":
        cls, kw = torch.optim.SGD, {"lr": recipe.lr, "momentum": recipe.momentum,
                                    "weight_decay": recipe.weight_decay}
    else:
        cls, kw = torch.optim.Adam, {"lr": recipe.lr, "weight_decay": recipe.weight_decay}
    try:
        return cls(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel here; any other error recurs below
        return cls(params, **kw)


def build_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """The recipe's learning-rate schedule, stepped once per optimisation step.

    The factor of a step is :meth:`Recipe.step_factor`, the schedule at the middle of the step:
    step decays still happen at epoch boundaries, and a cosine never lands exactly on its zero.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: recipe.step_factor(step, steps_per_epoch)
    )


def steps_per_epoch(n_images: int, recipe: Recipe, full_batches: bool, world: int = 1) -> int:
    """Optimisation steps in one epoch of ``n_images`` (what :func:`_loader` yields, capped by
    the recipe's ``max_steps_per_epoch``)."""
    batch = max(1, recipe.batch_size // world)
    per_rank = math.ceil(n_images / world)
    steps = per_rank // batch if _drop_last(per_rank, batch, full_batches) else math.ceil(per_rank / batch)
    steps = max(steps, 1)
    return min(steps, recipe.max_steps_per_epoch) if recipe.max_steps_per_epoch else steps


def _drop_last(n_images: int, batch: int, full_batches: bool) -> bool:
    """Drop an incomplete last batch only where it matters.

    Self-supervised tasks (``full_batches``) compare the images of a batch with each other and
    keep batch-norm statistics honest with full batches. Supervised epochs see every labelled
    image; only a last batch of a single image is dropped (batch norm cannot normalise one
    sample), and since each epoch shuffles, that image is seen in the other epochs.
    """
    if n_images <= batch:
        return False
    return full_batches or n_images % batch == 1


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image by k * 90 degrees, k uniform in 0..3 (global torch generator).

    Returns the rotated N x C x H x W batch and k (N,). Used by B's Method 4 and by the
    rotation-prediction SSL baseline.
    """
    k = torch.randint(0, 4, (x.shape[0],))
    out = torch.stack([torch.rot90(img, int(r), dims=(1, 2)) for img, r in zip(x, k, strict=True)])
    return out, k.to(x.device)


class Classification(nn.Module):
    """The supervised task: cross-entropy of ``model`` on the batch's labels.

    With ``rotation_aux`` (B Method 4, sec. IV-E.1) a 4-way rotation head on the same feature
    extractor adds its cross-entropy ("losses for both tasks are added together"): the CT
    classifier is trained on the images as they are, and a copy of the batch, each image
    rotated by k * 90 degrees, feeds the rotation head only. Test images are never rotated,
    so the classifier trains on what it is tested on. ``classify_rotated=True`` is the other
    reading of B's text (one rotated batch feeds both heads, as before), kept for comparison.

    Every task module of covtl has this shape: ``forward(batch) -> loss`` and the network
    to evaluate and hand on in ``self.model``.
    """

    full_batches = False  # every labelled image is seen each epoch (see _drop_last)

    def __init__(self, model: nn.Module, rotation_aux: bool = False, classify_rotated: bool = False) -> None:
        super().__init__()
        if classify_rotated and not rotation_aux:
            raise ValueError("classify_rotated=True needs rotation_aux=True (there is no rotated batch without it)")
        self.model = model
        self.rotation_head = nn.Linear(model.feature_dim, 4) if rotation_aux else None
        self.classify_rotated = classify_rotated

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        if self.rotation_head is None:
            return nn.functional.cross_entropy(self.model(x), y)
        x_rot, k = rotate_batch(x)
        rot_feats = self.model.forward_features(x_rot)  # N x D, rotated copies
        feats = rot_feats if self.classify_rotated else self.model.forward_features(x)  # N x D
        return nn.functional.cross_entropy(self.model.forward_head(feats), y) + nn.functional.cross_entropy(
            self.rotation_head(rot_feats), k
        )


def handoff(
    name: str,
    *,
    num_classes: int,
    checkpoint: str | os.PathLike | None = None,
    n_attn: int = 0,
    dropout: float | None = None,
    allow_new_attention: bool = False,
    seed: int | None = None,
) -> nn.Module:
    """Start a stage from the previous stage's checkpoint (or random init for ``None``).

    The classifier is replaced when the class count changes. Afterwards the model is
    compared with the checkpoint key by key: exactly the head's keys may differ (when the
    class count changed), and nothing else; attention blocks absent from the checkpoint are
    allowed only with ``allow_new_attention`` (torchvision weights into an ATTN network).
    With ``seed``, every generator is seeded first, so the new weights are reproducible.
    """
    from .models import build_model
    from .models.weights import read_state_dict

    if seed is not None:
        seed_everything(seed)
    model = build_model(name, num_classes=num_classes, n_attn=n_attn, dropout=dropout, weights=checkpoint)
    if checkpoint is None:
        return model
    report = model.load_report
    if report.missing_allowed and not allow_new_attention:
        raise ValueError(
            f"{checkpoint} has no weights for {len(report.missing_allowed)} keys of {name} "
            f"(n_attn={n_attn}), e.g. {report.missing_allowed[:3]}: it was trained with another "
            "architecture"
        )
    source = read_state_dict(checkpoint)
    own = model.state_dict()
    changed = {k for k in own if k not in source or own[k].shape != source[k].shape
               or not torch.equal(own[k], source[k].to(own[k].dtype))}
    head_ids = {id(p) for p in model.head.parameters()}
    head = {n for n, p in model.named_parameters() if id(p) in head_ids}
    expected = (head if report.head_reset else set()) | set(report.missing_allowed)
    if changed != expected:
        raise RuntimeError(
            f"hand-off from {checkpoint} changed {sorted(changed ^ expected)[:5]} unexpectedly"
        )
    return model


# ---------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, Any]:
    """Class probabilities, labels, groups and paths over a loader (eval mode)."""
    model.eval()
    probs, labels, groups, paths = [], [], [], []
    for batch in loader:
        x = _to_device(batch["image"], device)
        with _autocast(device):
            logits = model(x)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(torch.as_tensor(batch["label"]))
        groups += list(batch["group"])
        paths += list(batch["path"])
    return {"probs": torch.cat(probs).numpy(), "labels": torch.cat(labels).numpy(),
            "groups": groups, "paths": paths}


def _val_metrics(pred: dict[str, Any]) -> dict[str, float]:
    """Validation loss, top-1 accuracy and (with at least 5 classes) top-5 accuracy."""
    y, probs = pred["labels"], pred["probs"]
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1)
    out = {"val_loss": float(-np.log(p).mean()), "val_acc": float((probs.argmax(1) == y).mean())}
    if probs.shape[1] >= 5:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        out["val_top5"] = float((top5 == y[:, None]).any(axis=1).mean())
    return out


def score(pred: dict[str, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Test metrics with patient-level bootstrap intervals.

    Binary tasks (COVID vs NonCOVID, label 1 = COVID): the five metrics, COVID positive, plus
    the NonCOVID-positive variant of the official Self-Trans code. Multi-class: accuracy.
    """
    y, groups = pred["labels"], pred["groups"]
    if pred["probs"].shape[1] == 2:
        s = pred["probs"][:, 1]
        return {
            "covid_positive": bootstrap_ci(y, s, groups, n_boot=n_boot, seed=seed),
            "noncovid_positive": binary_metrics(y, s, positive=0),
            "n_images": len(y), "n_patients": len(set(groups)),
        }

    def accuracy(_, hit):
        return {"accuracy": float(hit.mean())}

    hit = (pred["probs"].argmax(1) == y).astype(int)  # 1 = correct, resampled by patient
    return {"accuracy": bootstrap_ci(hit, hit.astype(float), groups, metric=accuracy, n_boot=n_boot,
                                     seed=seed)["accuracy"],
            "n_images": len(y), "n_patients": len(set(groups))}


@contextlib.contextmanager
def _autocast(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    else:
        yield


# ---------------------------------------------------------------------------- the loop


def _loader(ds: Dataset, recipe: Recipe, cfg: TrainConfig, epoch: int, train: bool,
            world: int, rank: int, full_batches: bool = False) -> DataLoader:
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
    if train:  # augmentation seeded per sample: the same for any number of workers
        ds = _SeededSamples(ds, _epoch_seed(cfg.seed, epoch))
    sampler = None
    if train and world > 1:
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
        sampler.set_epoch(epoch)
    batch = max(1, recipe.batch_size // world) if train else recipe.batch_size
    per_rank = math.ceil(len(ds) / world)
    return DataLoader(
        ds, batch_size=batch, shuffle=train and sampler is None, sampler=sampler,
        num_workers=cfg.num_workers, generator=gen, worker_init_fn=_seed_worker,
        drop_last=train and _drop_last(per_rank, batch, full_batches), pin_memory=torch.cuda.is_available(),
        persistent_workers=cfg.num_workers > 0 and torch.cuda.is_available(),
    )


def _to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to ``device``; image batches channels-last (see :func:`fit`)."""
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], torch.Tensor):
        return [_to_device(v, device) for v in batch]
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def fit(
    task: nn.Module,
    recipe: Recipe,
    cfg: TrainConfig,
    train_set: Dataset,
    val_set: Dataset | None = None,
    test_set: Dataset | None = None,
) -> dict[str, Any]:
    """Train with ``recipe``; resume from ``cfg.out_dir/last.pt`` when it exists.

    Args:
        task: a network (trained as :class:`Classification`, with the recipe's rotation
            task if set) or a task module (``forward(batch) -> loss``, network in
            ``task.model``), e.g. the SSL methods of :mod:`covtl.ssl`.
        val_set: selects the best epoch (classification only).
        test_set: scored once at the end, for the last and the best-val network.

    Returns (and, on rank 0, writes to ``metrics.json``) the run record: config, recipe,
    history, last-epoch and best-val test metrics, provenance and wall time.
    """
    from .models import FeatureAPI

    if isinstance(task, FeatureAPI):
        task = Classification(task, rotation_aux=recipe.rotation_aux)
    model = task.model
    if hasattr(task, "check_train_set"):  # e.g. MoCo's queue must be smaller than the data
        task.check_train_set(train_set)
    out = Path(cfg.out_dir)
    rank, world = _distributed()
    if (out / "metrics.json").exists() and not cfg.overwrite:
        raise FinishedRunError(
            f"{out} holds a finished run (metrics.json); pass overwrite=True to replace it, or "
            "choose another output folder"
        )
    if cfg.overwrite and rank == 0:
        for name in ("metrics.json", "last.pt", "best.pt", "history.json", "predictions.csv"):
            (out / name).unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    device = resolve_device(cfg.device)
    cfg = dataclasses.replace(cfg, num_workers=resolve_num_workers(cfg.num_workers, device))
    seed_everything(cfg.seed)
    if recipe.kaiming_init:
        kaiming_init(model)
    # channels-last on every device: on CUDA for tensor cores; on this project's 2-core CPU it
    # trains 0-16% and evaluates 30-50% faster than the default layout at batch 16 (ResNet-18/50,
    # 64/128 px, one thread; bench/train.py prints the comparison), never slower. Results agree
    # with the default layout to rounding only, which training then amplifies: a new draw.
    task.to(device).to(memory_format=torch.channels_last)
    opt = build_optimizer(_trainable(task, recipe), recipe)
    full_batches = bool(getattr(task, "full_batches", False))
    sched = build_scheduler(opt, recipe, steps_per_epoch(len(train_set), recipe, full_batches, world))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    run_config = {"recipe": dataclasses.asdict(recipe), "seed": cfg.seed, "arch": cfg.arch,
                  "task": type(task).__name__, "world_size": world}

    start_epoch, history, best = 0, [], {"epoch": -1, "val_acc": -1.0, "val_loss": math.inf}
    best_state: dict[str, torch.Tensor] | None = None  # the best network's weights, not yet in best.pt
    last_path = out / "last.pt"
    if last_path.exists():
        ckpt = load_checkpoint(last_path, cfg.arch or None)
        if any(ckpt["config"][k] != run_config[k] for k in ("recipe", "seed", "task")):
            raise ValueError(
                f"{last_path} belongs to a run with another recipe, seed or task; remove {out} or "
                "choose another output folder to start afresh"
            )
        task.load_state_dict({**{f"model.{k}": v for k, v in ckpt["model"].items()}, **ckpt["task"]})
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best"]

    net = task
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            task, device_ids=[device.index] if device.type == "cuda" else None
        )
    t0 = last_write = time.perf_counter()
    show = _show_progress(cfg.progress) and rank == 0
    # where the wall time goes (this process's epochs): waiting for batches (decoding and
    # augmentation), training steps, validation, checkpoints, test scoring; a measurement, kept
    # out of the history so that results stay comparable across runs
    timing = dict.fromkeys(("data_s", "step_s", "val_s", "checkpoint_s", "test_s"), 0.0)
    for epoch in range(start_epoch, recipe.epochs):
        # every epoch's randomness (augmentation, dropout, rotations) from (seed, epoch) alone
        seed_everything(_epoch_seed(cfg.seed, epoch))
        loader = _loader(train_set, recipe, cfg, epoch, True, world, rank, full_batches)
        _set_train_mode(task, recipe)
        total, n_seen = 0.0, 0
        lrs: list[float] = []
        bar = tqdm(loader, disable=not show, leave=False, desc=f"epoch {epoch + 1}/{recipe.epochs}")
        mark = time.perf_counter()
        for step, batch in enumerate(bar):
            if recipe.max_steps_per_epoch and step >= recipe.max_steps_per_epoch:
                break
            got = time.perf_counter()
            timing["data_s"] += got - mark
            batch = _to_device(batch, device)
            with _autocast(device):
                loss = net(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss is not finite ({float(loss.detach())}) at epoch {epoch + 1}, step {step + 1} "
                    f"of {out}; the last good checkpoint is kept. Lower the learning rate "
                    f"(recipe {recipe.name}: lr={recipe.lr}) or check the data."
                )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            lrs.append(opt.param_groups[0]["lr"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            n = len(batch["path"]) if "path" in batch else 1
            total += float(loss.detach()) * n
            n_seen += n
            bar.set_postfix(loss=f"{total / n_seen:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            mark = time.perf_counter()
            timing["step_s"] += mark - got
        record = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "lr": lrs[0] if lrs else 0.0,
                  "lr_min": min(lrs, default=0.0), "steps": len(lrs), "images": n_seen}
        if rank == 0 and val_set is not None:
            t_val = time.perf_counter()
            val_loader = _loader(val_set, recipe, cfg, epoch, False, 1, 0)
            val = _val_metrics(predict(model, val_loader, device))
            record.update(val)
            timing["val_s"] += time.perf_counter() - t_val
            if (val["val_acc"], -val["val_loss"]) > (best["val_acc"], -best["val_loss"]):
                best = {"epoch": epoch, **val}
                t_ckpt = time.perf_counter()
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                timing["checkpoint_s"] += time.perf_counter() - t_ckpt
        history.append(record)
        if rank == 0 and cfg.progress is not False:
            # one line per epoch, also where no bar is drawn (papermill logs, CI, nohup)
            print(_epoch_line(record, recipe.epochs, time.perf_counter() - t0), flush=True)
        t_ckpt = time.perf_counter()
        due = (epoch == recipe.epochs - 1 or cfg.checkpoint_every_s <= 0
               or t_ckpt - last_write >= cfg.checkpoint_every_s)
        if rank == 0 and due:
            if best_state is not None:  # best.pt first: last.pt's "best" never points past it
                save_checkpoint(out / "best.pt", {"model": best_state, "arch": cfg.arch,
                                                  "epoch": best["epoch"], "config": run_config})
                best_state = None
            save_checkpoint(last_path, {
                "version": CHECKPOINT_VERSION, "model": model.state_dict(),
                "task": {k: v for k, v in task.state_dict().items() if not k.startswith("model.")},
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best": best,
                "config": run_config, "arch": cfg.arch,
                "provenance": provenance(seed=cfg.seed, device=str(device), data=cfg.data),
            })
            write_json_atomic(out / "history.json", history)
            last_write = time.perf_counter()
        timing["checkpoint_s"] += time.perf_counter() - t_ckpt
        if world > 1:
            dist.barrier()
    train_time = time.perf_counter() - t0
    t_test = time.perf_counter()

    result: dict[str, Any] = {"config": run_config, "history": history, "best_val": best}
    if rank == 0 and test_set is not None:
        test_loader = _loader(test_set, recipe, cfg, recipe.epochs, False, 1, 0)
        preds = {"last": predict(model, test_loader, device)}
        if best["epoch"] == recipe.epochs - 1:  # the last epoch is the best: the same network
            preds["best_val"] = preds["last"]
        elif best["epoch"] >= 0 and (out / "best.pt").exists():
            best_model = _copy_with_state(model, load_checkpoint(out / "best.pt", cfg.arch or None)["model"])
            preds["best_val"] = predict(best_model, test_loader, device)
        result["test"] = {k: score(p, cfg.n_boot, cfg.seed) for k, p in preds.items()}
        _write_predictions(out / "predictions.csv", preds)
    timing["test_s"] = time.perf_counter() - t_test
    result["timing"] = {k: round(v, 3) for k, v in timing.items()}
    result["provenance"] = provenance(seed=cfg.seed, device=str(device), data=cfg.data,
                                      train_time_s=round(train_time, 2), world_size=world)
    if rank == 0:
        write_json_atomic(out / "metrics.json", result)
    if world > 1:
        dist.barrier()
    return result


def _copy_with_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone


def _write_predictions(path: Path, preds: dict[str, dict[str, Any]]) -> None:
    import pandas as pd

    frames = []
    for which, p in preds.items():
        df = pd.DataFrame({"model": which, "path": p["paths"], "group": p["groups"], "label": p["labels"]})
        for c in range(p["probs"].shape[1]):
            df[f"prob_{c}"] = p["probs"][:, c]
        frames.append(df)
    tmp = path.with_name(f".{path.name}.tmp")
    pd.concat(frames).to_csv(tmp, index=False)
    os.replace(tmp, path)
