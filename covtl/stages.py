"""The stages of both papers' pipelines, one function each; the notebooks call these.

STUDY.md "Stages": STL-N (natural images), STL-M (chest X-rays), SSTL-M (self-supervised on
CT), fine-tune (COVID19-CT), transferability (LEEP & co.), explain (Grad-CAM, attention
maps), plus the split audit and the network inventory. Every stage reads the checkpoint of
the stage before it (``init``) and writes its results into ``out_dir``:

- ``metrics.json`` (what the book reads) with the provenance of the run;
- ``last.pt`` / ``best.pt`` checkpoints for training stages (never committed).

``init`` is ``""`` (random initialisation), ``"imagenet"`` (torchvision's ImageNet weights from
the local torch cache) or the path of a covtl checkpoint. ``data_root`` is a folder laid out
like ``../shared/data``; empty means the embedded synthetic data, generated on first use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .data import datasets as ds
from .data.cache import DecodedCache
from .data.transforms import build_region_views, build_transform, build_two_crops, cache_spec
from .io import write_json_atomic
from .models import ATTN_MODELS, MODEL_NAMES
from .profiles import PROFILES, Profile, get_profile
from .provenance import provenance
from .recipes import get_recipe, scale_recipe
from .train import FinishedRunError, TrainConfig, fit, handoff, resolve_device, seed_everything

__all__ = [
    "StageConfig",
    "audit_stage",
    "data_fingerprint",
    "explain_stage",
    "finetune_stage",
    "resolve_data_root",
    "ssl_stage",
    "supervised_source_stage",
    "transferability_stage",
]

@dataclass
class StageConfig:
    """The parameters every stage notebook has (validated here, once)."""

    profile: str = "quick"
    data_root: str = ""
    seed: int = 0
    backbone: str = "resnet18"
    n_attn: int = 0
    init: str = ""
    out_dir: str = "results/scratch"
    device: str = ""
    num_workers: int = -1  # DataLoader workers; -1: auto (0 on CPU; covtl.train.resolve_num_workers)
    decoded_cache: bool = True  # read images from covtl.data.cache.DecodedCache (same pixels, ~4x faster)
    # torch CPU threads; 0: as the process has them (OMP_NUM_THREADS; `covtl study` sets cores // jobs).
    # CPU results depend on it (summation order), so a run records it and its rerun command repeats it
    threads: int = 0

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if self.backbone not in MODEL_NAMES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.num_workers < -1:
            raise ValueError(f"num_workers must be -1 (auto), 0 (main process) or more, got {self.num_workers}")
        if self.threads < 0:
            raise ValueError(f"threads must be 0 (as the process has them) or more, got {self.threads}")
        if self.threads:
            torch.set_num_threads(self.threads)
        if self.n_attn and self.backbone not in ATTN_MODELS:
            raise ValueError(f"n_attn={self.n_attn} needs a ResNet backbone, got {self.backbone}")
        if self.init not in ("", "imagenet") and not Path(self.init).is_file():
            raise FileNotFoundError(
                f"init checkpoint {self.init!r} does not exist; run the upstream stage first "
                "(covtl study runs stages in order), or use '' for random init"
            )

    @property
    def arch(self) -> dict[str, Any]:
        return {"name": self.backbone, "n_attn": self.n_attn}

    @property
    def settings(self) -> Profile:
        return get_profile(self.profile)

    def data_limits(self) -> dict[str, int | None]:
        p = self.settings
        return {"max_train": p.max_train, "max_eval": p.max_eval, "max_classes": p.max_classes}


# ---------------------------------------------------------------------------- data


def resolve_data_root(data_root: str | os.PathLike | None = "") -> Path:
    """The real data root, or the embedded synthetic one (generated once, then reused)."""
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"data root {root} does not exist; give a folder laid out like ../shared/data "
                "(covid-ct/, covidx-mini/, lung-ct-unlabeled/, medseg-covid/, natural/<set>/) or "
                "leave data_root empty for the embedded synthetic data"
            )
        return root
    from .data import synth
    from .data.cache import default_cache_dir

    default = default_cache_dir() / f"synthetic-v{synth.GENERATOR_VERSION}"
    root = Path(os.environ.get("COVTL_SYNTHETIC_DATA", default))
    if not (root / "SYNTHETIC.json").is_file():
        synth.generate(root, seed=0, overwrite=root.exists())
    return root


def data_fingerprint(root: Path) -> str:
    """A short content key of a data root: the SHA256SUMS files (or, failing that, names+sizes)."""
    h = hashlib.sha256()
    sums = sorted(root.rglob("SHA256SUMS"))
    if sums:
        for p in sums:
            h.update(p.read_bytes())
    else:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(f"{p.relative_to(root)}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _load(cfg: StageConfig, name: str, folder: Path, split: str, stage: str, size: int, train: bool,
          transform=None) -> ds.ImageDataset:
    """``name``'s ``split`` with ``build_transform(stage, size, train)`` (or ``transform``).

    With ``cfg.decoded_cache`` the images come from a :class:`~covtl.data.cache.DecodedCache`
    built with :func:`~covtl.data.transforms.cache_spec`'s size and method, so the pipeline's
    first step is a no-op and the pixels are exactly those decoded from the files.
    """
    dataset = ds.load_dataset(name, folder, split, transform or build_transform(stage, size, train=train))
    if cfg.decoded_cache:
        cache_size, method = cache_spec(stage, size, train)
        dataset.use_cache(DecodedCache.build(dataset.paths, cache_size, resize=method, workers=1))
    return dataset


def _subset(dataset: ds.ImageDataset, limit: int | None, seed: int, classes: int | None = None) -> Dataset:
    """A deterministic, class-stratified subset of at most ``limit`` images (and ``classes`` classes)."""
    rec = dataset.records.reset_index(drop=True)
    idx = np.arange(len(rec))
    if classes is not None and rec.label.max() >= classes:
        idx = idx[rec.label.to_numpy() < classes]
    if limit is None or len(idx) <= limit:
        return dataset if len(idx) == len(rec) else Subset(dataset, idx.tolist())
    rng = np.random.default_rng(seed)
    labels = rec.label.to_numpy()[idx]
    picked = []
    for lab in np.unique(labels):
        members = idx[labels == lab]
        share = max(1, round(limit * len(members) / len(idx)))
        picked += rng.permutation(members)[:share].tolist()
    return Subset(dataset, sorted(picked[:limit]))


def _split_by_group(dataset: ds.ImageDataset, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Train/val indices with whole patients in each (for sets published without a val split)."""
    groups = dataset.records.group.astype(str).to_numpy()
    unique = np.unique(groups)
    rng = np.random.default_rng(seed)
    val_groups = set(rng.permutation(unique)[: max(1, round(frac * len(unique)))])
    is_val = np.array([g in val_groups for g in groups])
    return np.flatnonzero(~is_val).tolist(), np.flatnonzero(is_val).tolist()


def _limit_classes(n: int, cfg: StageConfig) -> int:
    cap = cfg.data_limits()["max_classes"]
    return min(n, cap) if cap else n


# ---------------------------------------------------------------------------- helpers


def _build(cfg: StageConfig, num_classes: int, dropout: float | None = None) -> torch.nn.Module:
    """The stage's network: from ``cfg.init`` (checkpoint, ImageNet weights or random)."""
    init = {"": None, "imagenet": "IMAGENET1K_V1"}.get(cfg.init, cfg.init)
    return handoff(cfg.backbone, num_classes=num_classes, checkpoint=init, n_attn=cfg.n_attn,
                   dropout=dropout, allow_new_attention=cfg.init == "imagenet", seed=cfg.seed)


def _train_config(cfg: StageConfig, root: Path, num_classes: int, **extra) -> TrainConfig:
    return TrainConfig(
        out_dir=Path(cfg.out_dir), seed=cfg.seed, device=cfg.device or None, num_workers=cfg.num_workers,
        arch={**cfg.arch, "num_classes": num_classes},
        data={"root": str(root), "fingerprint": data_fingerprint(root), **extra},
    )


def _fit(task, recipe, tcfg: TrainConfig, *datasets) -> dict[str, Any]:
    """The engine's record; a run interrupted after training (before the stage record was
    written) reuses its finished training instead of failing on the existing results."""
    try:
        return fit(task, recipe, tcfg, *datasets)
    except FinishedRunError:
        return json.loads((Path(tcfg.out_dir) / "metrics.json").read_text())


def _finish(cfg: StageConfig, result: dict[str, Any], stage: str, settings: dict[str, Any] | None = None,
            **extra) -> dict[str, Any]:
    """The stage's record, written to ``metrics.json`` (by rank 0 only under torchrun).

    ``settings`` are the stage's own parameters beyond :class:`StageConfig` (e.g. SSTL-M's
    ``region_weight``); they are recorded with the others under ``stage_config``.
    """
    # the stage's parameters (profile, init, data root, ...) under their own key: the engine's
    # record has a "config" of its own (recipe, seed, arch)
    record = {"stage": stage, "stage_config": {**dataclasses.asdict(cfg), **(settings or {})}, **result, **extra}
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()) or \
            torch.distributed.get_rank() == 0:
        write_json_atomic(Path(cfg.out_dir) / "metrics.json", record)
    return record


# ---------------------------------------------------------------------------- stages


def supervised_source_stage(cfg: StageConfig, dataset: str, recipe_name: str) -> dict[str, Any]:
    """STL-N (``dataset="natural"``) or STL-M (``"covidx"``): supervised source pretraining.

    COVIDx is published with train/test only: a validation split of 10% of the training
    patients is carved out for model selection.
    """
    root = resolve_data_root(cfg.data_root)
    recipe = scale_recipe(get_recipe(recipe_name), cfg.profile)
    limits = cfg.data_limits()
    folder = ds.locate(root, dataset)

    def load(name: str, split: str, train: bool) -> ds.ImageDataset:
        return _load(cfg, name, folder, split, recipe.augment, recipe.image_size, train)

    if dataset == "natural":
        train_full = load("natural", "train", True)
        val_full = load("natural", "val", False)
        n_classes = _limit_classes(len(train_full.classes), cfg)
        train = _subset(train_full, limits["max_train"], cfg.seed, n_classes)
        val = _subset(val_full, limits["max_eval"], cfg.seed, n_classes)
        test = None  # ImageNet's test labels are not public: A reports the validation set
    elif dataset == "covidx":
        train_full = load("covidx", "train", True)
        n_classes = len(train_full.classes)
        tr_idx, va_idx = _split_by_group(train_full, 0.1, cfg.seed)
        val_full = load("covidx", "train", False)
        train = _subset_indices(train_full, tr_idx, limits["max_train"], cfg.seed)
        val = _subset_indices(val_full, va_idx, limits["max_eval"], cfg.seed)
        test = _subset(load("covidx", "test", False), limits["max_eval"], cfg.seed)
    else:
        raise ValueError(f"source dataset must be 'natural' or 'covidx', got {dataset!r}")
    model = _build(cfg, n_classes, recipe.dropout)
    result = _fit(model, recipe, _train_config(cfg, root, n_classes, dataset=dataset), train, val, test)
    classes = list((train_full.classes)[:n_classes])
    return _finish(cfg, result, "stl_n" if dataset == "natural" else "stl_m", classes=classes,
                   n_train=len(train), n_val=len(val))


def _subset_indices(dataset: ds.ImageDataset, indices: list[int], limit: int | None, seed: int) -> Dataset:
    if limit is not None and len(indices) > limit:
        indices = sorted(np.random.default_rng(seed).permutation(indices)[:limit].tolist())
    return Subset(dataset, indices)


class _SSLViews:
    """PIL image -> [query, key] (+ the five augmented lobe regions, for A's region task)."""

    def __init__(self, stage: str, size: int, regions: bool) -> None:
        self.two = build_two_crops(stage, size)
        self.regions = build_region_views(stage, size) if regions else None

    def __call__(self, image) -> list[torch.Tensor]:
        views = list(self.two(image))
        if self.regions is not None:
            views.append(self.regions(image))  # 5 x 3 x s x s
        return views


#: A's alpha2 (sec. 6.2), the default region weight of ``ssl_stage``
REGION_WEIGHT = 0.8


def ssl_stage(cfg: StageConfig, method: str, recipe_name: str, dataset: str = "covid-ct", *,
              region_weight: float = REGION_WEIGHT) -> dict[str, Any]:
    """SSTL-M: self-supervised pretraining (MoCo, SimCLR, rotation or A's region MoCo).

    On COVID19-CT only the training split is used and labels are ignored; ``dataset=
    "lung-ct-unlabeled"`` is B's LUNA stage. MoCo's queue is capped below the number of
    training images (STUDY.md, 7); the size used is recorded.

    ``region_weight`` is A's alpha2 for ``a_region_moco`` (A eq. (6)); 0 makes it plain MoCo
    with A's settings (the regions are then neither cut nor encoded). It is recorded in the
    stage's ``stage_config``; other methods refuse a non-default value.
    """
    from .ssl import SSL_METHODS, build_ssl

    region = method == "a_region_moco"
    if not region and region_weight != REGION_WEIGHT:
        raise ValueError(
            f"region_weight={region_weight} only applies to method 'a_region_moco' (A's alpha2), "
            f"got method {method!r}; leave region_weight at {REGION_WEIGHT}"
        )
    if region and region_weight < 0:
        raise ValueError(f"region_weight must be >= 0, got {region_weight}")
    root = resolve_data_root(cfg.data_root)
    recipe = scale_recipe(get_recipe(recipe_name), cfg.profile)
    limits = cfg.data_limits()
    views = _SSLViews(recipe.augment, recipe.image_size, regions=region and region_weight > 0)
    folder = ds.locate(root, dataset)
    full = _load(cfg, dataset, folder, "train", recipe.augment, recipe.image_size, True, transform=views)
    train = _subset(full, limits["max_train"], cfg.seed)
    model = _build(cfg, 2)
    overrides: dict[str, Any] = {"alpha2": float(region_weight)} if region else {}
    if "moco" in method:
        paper_k = SSL_METHODS[method][1].get("queue_size", 65536)
        overrides["queue_size"] = min(paper_k, max(1, len(train) // 2))
    task = build_ssl(method, model, **overrides)
    settings = {"method": method, "recipe_name": recipe_name, "dataset": dataset,
                "region_weight": float(region_weight) if region else None}
    data = {"dataset": dataset, "method": method, **({"region_weight": float(region_weight)} if region else {})}
    result = _fit(task, recipe, _train_config(cfg, root, 2, **data), train)
    return _finish(cfg, result, "sstl_m", settings, method=method, dataset=dataset, n_train=len(train),
                   queue_size=overrides.get("queue_size"))


def finetune_stage(cfg: StageConfig, recipe_name: str) -> dict[str, Any]:
    """Fine-tune on COVID19-CT (COVID = class 1); test metrics with patient-bootstrap CIs."""
    root = resolve_data_root(cfg.data_root)
    recipe = scale_recipe(get_recipe(recipe_name), cfg.profile)
    limits = cfg.data_limits()
    folder = ds.locate(root, "covid-ct")

    def load(split: str, train: bool) -> Dataset:
        data = _load(cfg, "covid-ct", folder, split, recipe.augment, recipe.image_size, train)
        return _subset(data, limits["max_train" if train else "max_eval"], cfg.seed)

    train, val, test = load("train", True), load("val", False), load("test", False)
    model = _build(cfg, 2, recipe.dropout)
    result = _fit(model, recipe, _train_config(cfg, root, 2, dataset="covid-ct"), train, val, test)
    return _finish(cfg, result, "finetune", recipe_name=recipe_name, n_train=len(train))


def transferability_stage(cfg: StageConfig, source_classes: int) -> dict[str, Any]:
    """LEEP, NCE (with the source head), LogME and H-score on the COVID19-CT training split.

    ``source_classes`` is the class count of the checkpoint's head (the source task); a
    randomly initialised network is scored with a random head of that size ("w/o TL").
    """
    from .transferability import collect, transferability_scores

    root = resolve_data_root(cfg.data_root)
    seed_everything(cfg.seed)
    size = scale_recipe(get_recipe("a_finetune"), cfg.profile).image_size
    folder = ds.locate(root, "covid-ct")
    data = _subset(_load(cfg, "covid-ct", folder, "train", "eval", size, False), cfg.data_limits()["max_train"],
                   cfg.seed)
    if cfg.init not in ("", "imagenet"):  # keep the checkpoint's own source head
        from .train import load_checkpoint

        source_classes = load_checkpoint(Path(cfg.init))["arch"]["num_classes"]
    model = _build(cfg, source_classes)
    device = resolve_device(cfg.device or None)
    model.to(device)
    collected = collect(model, DataLoader(data, batch_size=32), device=device)
    scores = transferability_scores(collected)
    return _finish(cfg, {"scores": scores, "provenance": provenance(seed=cfg.seed, device=str(device),
                                                                     data=str(root))},
                   "transferability", source_classes=source_classes, n_images=len(data))


def explain_stage(cfg: StageConfig, n_figure: int = 4) -> dict[str, Any]:
    """Grad-CAM (and the last attention map) of a fine-tuned network, scored on lesion masks.

    Writes ``localisation.csv`` (per image and method) and ``maps.npz``-free figure data:
    ``examples.json`` with the paths of the images shown; the figure itself is drawn by the
    book from the saved maps (``maps.pt``, a few images only).
    """
    from .explain import BASELINES, GradCAM, attention_map, localisation_scores

    root = resolve_data_root(cfg.data_root)
    size = scale_recipe(get_recipe("a_finetune"), cfg.profile).image_size
    folder = ds.locate(root, "medseg")
    data = ds.load_dataset("medseg", folder, "all", build_transform("eval", size, train=False))
    data = _subset(data, cfg.data_limits()["max_eval"], cfg.seed)
    model = _build(cfg, 2)
    device = resolve_device(cfg.device or None)
    model.to(device).eval()
    # the network's maps, and two maps that ignore the image: the floor they must beat
    methods = ["gradcam"] + (["attention"] if cfg.n_attn else []) + list(BASELINES)
    scores = pd.concat(
        [localisation_scores(model, data, method=m, class_idx=1, device=device) for m in methods]
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".localisation.csv.tmp"
    scores.to_csv(tmp, index=False)
    os.replace(tmp, out / "localisation.csv")
    x = torch.stack([data[i]["image"] for i in range(min(n_figure, len(data)))]).to(device)
    maps = {"images": x.cpu()}
    with GradCAM(model) as cam:
        maps["gradcam"] = cam(x, class_idx=1).cpu()  # towards COVID
    if cfg.n_attn:
        maps["attention"] = attention_map(model, x).cpu()
    maps["masks"] = torch.stack([data[i]["mask"] for i in range(x.shape[0])]).cpu()
    torch.save(maps, out / "maps.pt")
    summary = scores.groupby("method")[["pointing_game", "energy_inside", "iou_at_half"]].mean()
    return _finish(cfg, {"localisation": summary.to_dict(orient="index"),
                         "provenance": provenance(seed=cfg.seed, device=str(device), data=str(root))},
                   "explain", n_images=len(data))


def audit_stage(cfg: StageConfig) -> dict[str, Any]:
    """Split audit of COVID19-CT (patients and near-duplicates) and B's Table I statistics."""
    from .data.audit import audit_covid_ct

    root = resolve_data_root(cfg.data_root)
    audit = audit_covid_ct(ds.locate(root, "covid-ct"))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, table in audit.tables().items():
        table.to_csv(out / f"{name}.csv", index=False)
        tables[name] = json.loads(table.to_json(orient="records"))
    return _finish(cfg, {"tables": tables, "provenance": provenance(seed=cfg.seed, data=str(root))},
                   "audit", threshold=audit.threshold)
