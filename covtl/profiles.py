"""The four profiles, one frozen :class:`Profile` each: everything a profile name selects.

A profile scales the papers' recipes (epochs, image size, batch), caps the data a stage
sees, and shapes the study's plan (which paper networks run as which stand-ins, how many
seeds, which rows are left out and why). ``paper`` leaves every recipe as the papers give it.
The book's profile table is generated from these objects; nothing else defines a profile.

    from covtl.profiles import get_profile
    get_profile("quick").epochs_for("b_transfer")   # -> 12
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["PROFILES", "PROFILE_NAMES", "Profile", "get_profile"]


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Profile:
    """One profile (nanoGPT-style: one commented field per setting)."""

    name: str
    summary: str  # one line: what the profile is for
    data: str  # "synthetic" (the embedded data by default) or "real" (a data root is expected)
    where: str  # where it is meant to run
    budget: str  # the time it must fit in, as STUDY.md sets it
    # --- recipes: None / empty = the paper's value unchanged
    epochs: Mapping[str, int] = field(default_factory=dict)  # recipe name -> epochs (schedules scale along)
    image_size: int | None = None  # input size in px for every stage
    max_batch: int | None = None  # cap on the batch; an SGD lr scales linearly with it (Goyal et al. 2017)
    max_steps_per_epoch: int | None = None  # smoke only: a few steps per epoch
    warmup_epochs: float = 0.0  # linear warm-up of a scaled SGD lr (Goyal et al. 2017: 5 epochs), at most half the run
    # --- data caps (deterministic class-stratified subsets; None = everything)
    max_train: int | None = None  # training images per stage
    max_eval: int | None = None  # validation / test / explanation images per stage
    max_classes: int | None = None  # natural-image classes of STL-N
    # --- the plan (covtl.study.build_plan)
    seeds: int = 3  # seeds per fine-tune cell
    pretrain_seeds: int = 1  # independent pretraining chains; fine-tune seed s starts from chain s mod this
    backbones: Mapping[str, str] = field(default_factory=dict)  # paper network -> network that runs
    attn_variants: tuple[str, ...] = ("Baseline", "1 ATTN", "5 ATTNs")  # paper A's variants that run
    a3_controlled: tuple[str, ...] | None = None  # A's variants with Table 3's controlled rows (None: all that run)
    b_ablation: tuple[str, ...] = ("ResNet-50", "DenseNet-169")  # B's networks of Tables IV-VII and Fig. 5
    tables: tuple[str, ...] | None = None  # the tables this profile runs (None: all)
    natural_classes: int = 1000  # head size of a random "w/o TL" network in A's Table 6
    skip_reason: str = ""  # why left-out rows are left out (shown on the pages)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epochs", _frozen(self.epochs))
        object.__setattr__(self, "backbones", _frozen(self.backbones))
        if self.data not in ("synthetic", "real"):
            raise ValueError(f"profile {self.name}: data must be 'synthetic' or 'real', got {self.data!r}")
        if self.seeds < 1:
            raise ValueError(f"profile {self.name}: seeds must be >= 1, got {self.seeds}")
        if not 1 <= self.pretrain_seeds <= self.seeds:
            raise ValueError(f"profile {self.name}: pretrain_seeds must be between 1 and seeds ({self.seeds}), "
                             f"got {self.pretrain_seeds}")
        if any(e < 1 for e in self.epochs.values()):
            raise ValueError(f"profile {self.name}: every epoch count must be >= 1, got {dict(self.epochs)}")

    @property
    def scales(self) -> bool:
        """Whether this profile changes the papers' recipes at all."""
        return bool(self.epochs) or self.image_size is not None or self.max_batch is not None

    def epochs_for(self, recipe: str, paper_epochs: int | None = None) -> int | None:
        """Epochs of ``recipe`` at this profile (``paper_epochs`` when the profile keeps them)."""
        if not self.scales:
            return paper_epochs
        if recipe not in self.epochs:
            raise ValueError(f"profile {self.name} gives no epoch count for recipe {recipe!r}; "
                             f"add it to covtl.profiles (it has {', '.join(self.epochs)})")
        return self.epochs[recipe]

    def as_row(self) -> dict[str, Any]:
        """The profile as one row of the book's table (readable values)."""
        def cap(v: int | None) -> str:
            return "all" if v is None else str(v)

        epochs = ", ".join(f"{k} {v}" for k, v in self.epochs.items()) if self.epochs else "the papers'"
        return {"profile": self.name, "data": self.data, "what it is for": self.summary, "where": self.where,
                "budget": self.budget, "image size": self.image_size or "224 (the papers')",
                "batch cap": self.max_batch or "the papers'", "epochs": epochs,
                "training images per stage": cap(self.max_train), "eval images": cap(self.max_eval),
                "natural classes": cap(self.max_classes), "seeds per fine-tune cell": self.seeds,
                "pretraining chains": self.pretrain_seeds,
                "A's variants": ", ".join(self.attn_variants),
                "A Table 3 controlled rows": "all variants" if self.a3_controlled is None
                else ", ".join(self.a3_controlled), "B's ablation networks": ", ".join(self.b_ablation),
                "tables": "all" if self.tables is None else ", ".join(self.tables)}


_PAPER_NETS = {"R-50": "resnet50", "R-101": "resnet101", "VGG-16": "vgg16", "ResNet-18": "resnet18",
               "ResNet-50": "resnet50", "DenseNet-121": "densenet121", "DenseNet-169": "densenet169",
               "EfficientNet-b0": "efficientnet_b0", "EfficientNet-b1": "efficientnet_b1", "CRNet": "crnet"}
_SMALL_NETS = {"R-50": "resnet18", "ResNet-18": "resnet18", "ResNet-50": "resnet18", "CRNet": "crnet"}

#: every recipe of covtl.recipes with one epoch (the smoke profile: 1-2 steps of each)
_ONE_EPOCH = dict.fromkeys(("a_stl_n", "a_stl_m", "a_finetune", "b_random_init", "b_transfer",
                            "b_transfer_frozen", "b_rotation_joint", "a_sstl_m", "a_moco", "a_simclr",
                            "b_moco", "b_rotation_ssl"), 1)

PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile(
        "smoke", "exercises every stage and page; numbers mean nothing", "synthetic", "CI, every commit",
        "whole study + book < 10 min on 2 CPU cores",
        epochs=_ONE_EPOCH, image_size=32, max_batch=8, max_steps_per_epoch=2, warmup_epochs=5,
        max_train=48, max_eval=32, max_classes=4, seeds=1,
        backbones=_SMALL_NETS, attn_variants=("Baseline", "1 ATTN", "5 ATTNs"), b_ablation=("ResNet-50",),
        natural_classes=4, skip_reason="not run at the smoke profile",
    ),
    Profile(
        "quick", "small but meaningful: every fine-tuned network learns the synthetic task", "synthetic",
        "any laptop", "fresh-clone `make study` < 15 min on 2 cores",
        # depth over breadth: the fine-tunes train until the synthetic task is learnt (AUC >= 0.75 on
        # its validation curves), which on 2 cores leaves room for the headline rows only (`tables`)
        epochs={"a_stl_n": 3, "a_stl_m": 3, "a_finetune": 8, "b_random_init": 10, "b_transfer": 10,
                "b_transfer_frozen": 10, "b_rotation_joint": 10, "a_sstl_m": 2, "a_moco": 2, "a_simclr": 2,
                "b_moco": 3, "b_rotation_ssl": 3},
        image_size=48, max_batch=32, warmup_epochs=5, max_train=600, max_eval=300, max_classes=20, seeds=1,
        backbones={"R-50": "resnet18", "ResNet-18": "resnet18", "ResNet-50": "resnet18"},
        attn_variants=("Baseline", "5 ATTNs"), b_ablation=("ResNet-50",), natural_classes=20,
        tables=("B1", "A1", "A2", "A4", "A6", "A-Fig4", "B3", "B5", "B-Fig5"),
        skip_reason="not run at the quick profile (its 15-minute budget on 2 cores buys depth, not breadth)",
    ),
    Profile(
        "cpu", "reduced real-data study: stand-in networks at 64 px, trained to convergence, 3 seeds",
        "real", "a workstation or this kind of 2-core machine", "the whole plan <= 6 h on 2 cores",
        epochs={"a_stl_n": 5, "a_stl_m": 20, "a_finetune": 30, "b_random_init": 30, "b_transfer": 30,
                "b_transfer_frozen": 30, "b_rotation_joint": 30, "a_sstl_m": 30, "a_moco": 30, "a_simclr": 30,
                "b_moco": 30, "b_rotation_ssl": 30},
        image_size=64, max_batch=32, warmup_epochs=5, max_train=8_000, max_eval=None, max_classes=None,
        seeds=3,
        backbones={"R-50": "resnet18", "ResNet-18": "resnet18", "ResNet-50": "resnet18",
                   "DenseNet-169": "resnet18", "CRNet": "crnet"},
        attn_variants=("Baseline", "5 ATTNs"), a3_controlled=("Baseline",), b_ablation=("ResNet-50", "DenseNet-169"),
        natural_classes=100,
        skip_reason="not run at the cpu profile (its 6-hour budget on 2 cores)",
    ),
    Profile(
        "paper", "the papers' networks and hyperparameters unchanged (224 px, epochs, batches)", "real",
        "GPUs; several via torchrun", "the GPU-hours the book estimates",
        backbones=_PAPER_NETS, seeds=3, pretrain_seeds=3, natural_classes=1000,
    ),
)}

PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | Profile) -> Profile:
    """The profile called ``name`` (a :class:`Profile` passes through)."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]
