"""Training recipes of both papers, each value written once and cited, and the profiles.

A recipe is what a paper says about one training stage. A profile (:mod:`covtl.profiles`)
scales epochs, image size and batch size; the ``paper`` profile returns the recipe unchanged.
Where a paper is silent or ambiguous the field's comment says what we chose (also listed in the book's Methods chapter).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from .profiles import Profile, get_profile

__all__ = ["RECIPES", "Recipe", "get_recipe", "scale_recipe"]


@dataclass(frozen=True)
class Recipe:
    """One supervised training stage.

    Schedules are in epochs (:meth:`lr_factor`): ``step`` multiplies the lr by ``gamma`` every
    ``step_size`` epochs, ``multistep`` at each of ``milestones``, ``cosine`` follows the closed
    form of torch's CosineAnnealingLR with ``T_max = cosine_period`` epochs (the lr returns up
    after each period, as in torch). The engine evaluates it once per optimisation step.
    """

    name: str
    source: str  # where the values come from
    optimizer: Literal["sgd", "adam"]
    lr: float
    epochs: int
    batch_size: int
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"
    step_size: int = 0  # epochs, for "step"
    milestones: tuple[int, ...] = ()  # epochs, for "multistep"
    gamma: float = 0.1  # lr factor at each step/milestone
    cosine_period: float = 0  # epochs, for "cosine" (a scaled period may be fractional)
    warmup_epochs: float = 0.0  # linear warm-up from 0 over these epochs (the profiles' scaled SGD lr)
    dropout: float | None = None  # before the classifier; None = the architecture's default
    image_size: int = 224
    augment: str = "eval"  # an augmentation of covtl.data.transforms.AUGMENTATIONS
    kaiming_init: bool = False  # re-initialise convolutions with Kaiming (random-init runs)
    freeze_backbone: bool = False  # train the classifier only (B, Table VII "frozen")
    rotation_aux: bool = False  # joint 4-way rotation prediction (B, Method 4)
    max_steps_per_epoch: int | None = None  # smoke profile only

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "step", "multistep", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.image_size < 16:
            raise ValueError(
                f"recipe {self.name}: need lr > 0, epochs >= 1, batch_size >= 1, image_size >= 16; "
                f"got lr={self.lr}, epochs={self.epochs}, batch_size={self.batch_size}, "
                f"image_size={self.image_size}"
            )
        if self.schedule == "step" and self.step_size < 1:
            raise ValueError(f"recipe {self.name}: schedule 'step' needs step_size >= 1")
        if self.schedule == "cosine" and self.cosine_period <= 0:
            raise ValueError(f"recipe {self.name}: schedule 'cosine' needs cosine_period > 0")

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def lr_factor(self, epoch: float) -> float:
        """The lr multiplier ``epoch`` epochs into the run (fractional epochs allowed).

        Step decays count whole epochs completed. The cosine is ``(1 + cos(pi t / T)) / 2``
        with ``t`` in (fractional) epochs: evaluated per epoch, as torch's scheduler does, it
        is exactly 0 at ``t = T, 3T, ...`` and a whole epoch trains at lr 0; the engine
        evaluates it at the middle of every step, where it is never 0.
        """
        done = math.floor(epoch)
        warm = min(1.0, epoch / self.warmup_epochs) if self.warmup_epochs > 0 else 1.0
        if self.schedule == "step":
            return warm * self.gamma ** (done // self.step_size)
        if self.schedule == "multistep":
            return warm * self.gamma ** sum(done >= m for m in self.milestones)
        if self.schedule == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * epoch / self.cosine_period))
        return warm

    def step_factor(self, step: int, steps_per_epoch: int) -> float:
        """The lr multiplier of optimisation step ``step``: :meth:`lr_factor` at its middle."""
        return self.lr_factor((step + 0.5) / steps_per_epoch)

    def lr_schedule(self, steps_per_epoch: int) -> list[float]:
        """The lr of every optimisation step of the run, as the engine applies it."""
        return [self.lr * self.step_factor(s, steps_per_epoch) for s in range(self.epochs * steps_per_epoch)]


_A = "Liu & Ji 2021, sec. 6.2"
_B = "He et al. 2020, sec. IV-C.1"

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        # STL-N on ImageNet: "dropout with a rate of 0.8", wd 1e-4, SGD momentum 0.9, 90 epochs,
        # lr 0.1 decayed by 0.1 every 30 epochs, batch 512. We read "rate" as the drop
        # probability, as written (the STL-M sentence says "keep rate" when it means keep).
        Recipe("a_stl_n", f"{_A} (STL-N)", "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
               schedule="step", step_size=30, epochs=90, batch_size=512, dropout=0.8,
               image_size=224, augment="a_stl_n"),
        # STL-M on COVIDx: SGD lr 2e-4, dropout keep rate 0.5, 30 epochs, batch 64. Momentum and
        # weight decay are not given: we keep the paper's other SGD settings (0.9, 1e-4).
        Recipe("a_stl_m", f"{_A} (STL-M)", "sgd", lr=2e-4, momentum=0.9, weight_decay=1e-4,
               epochs=30, batch_size=64, dropout=0.5, image_size=224, augment="a_stl_m"),
        # Fine-tune on COVID19-CT: "the same optimizer and hyperparameters as in the SSTL-M":
        # SGD lr 0.3, momentum 0.9, wd 1e-4, 200 epochs, lr x0.1 at 120 and 160, batch 256.
        Recipe("a_finetune", f"{_A} (fine-tune = SSTL-M optimiser)", "sgd", lr=0.3, momentum=0.9,
               weight_decay=1e-4, schedule="multistep", milestones=(120, 160), epochs=200,
               batch_size=256, dropout=None, image_size=224, augment="a_finetune"),
        # B, from scratch: Adam lr 1e-4, batch 16, cosine annealing with period 10, 50 epochs,
        # Kaiming initialisation.
        Recipe("b_random_init", _B, "adam", lr=1e-4, schedule="cosine", cosine_period=10,
               epochs=50, batch_size=16, image_size=224, augment="b_supervised", kaiming_init=True),
        # B, transfer (ImageNet or SSL weights): the same optimiser and schedule (the paper gives
        # one set of settings), no re-initialisation.
        Recipe("b_transfer", _B, "adam", lr=1e-4, schedule="cosine", cosine_period=10,
               epochs=50, batch_size=16, image_size=224, augment="b_supervised"),
        # B Table VII: the transfer recipe with the feature extractor frozen.
        Recipe("b_transfer_frozen", f"{_B}; Table VII", "adam", lr=1e-4, schedule="cosine",
               cosine_period=10, epochs=50, batch_size=16, image_size=224, augment="b_supervised",
               freeze_backbone=True),
        # B Method 4: rotation prediction trained jointly with the CT classifier (sec. IV-E.1).
        Recipe("b_rotation_joint", "He et al. 2020, sec. IV-E.1 (Method 4)", "adam", lr=1e-4,
               schedule="cosine", cosine_period=10, epochs=50, batch_size=16, image_size=224,
               augment="b_supervised", rotation_aux=True),
        # --- self-supervised stages (trained by the same engine; see covtl.ssl) ---
        # A's SSTL-M (sec. 6.2): SGD lr 0.3, momentum 0.9, wd 1e-4, 200 epochs, lr x0.1 at 120
        # and 160, batch 256; MoCo + region task.
        Recipe("a_sstl_m", f"{_A} (SSTL-M)", "sgd", lr=0.3, momentum=0.9, weight_decay=1e-4,
               schedule="multistep", milestones=(120, 160), epochs=200, batch_size=256,
               image_size=224, augment="a_sstl_m"),
        # A's comparisons "use the same hyperparameters as used in their papers": MoCo v1
        # (He et al. 2020: SGD 0.03, momentum 0.9, wd 1e-4, 200 epochs, x0.1 at 120/160, batch 256)
        Recipe("a_moco", "He et al. 2020 (MoCo v1), via Liu & Ji sec. 6.2", "sgd", lr=0.03, momentum=0.9,
               weight_decay=1e-4, schedule="multistep", milestones=(120, 160), epochs=200,
               batch_size=256, image_size=224, augment="a_moco_v1"),
        # SimCLR (Chen et al. 2020) trains with LARS at batch 4096; we use SGD with MoCo's
        # settings so the three methods of A's Table 3 differ only in their objective.
        Recipe("a_simclr", "Chen et al. 2020 (SimCLR), via Liu & Ji sec. 6.2; SGD instead of LARS",
               "sgd", lr=0.03, momentum=0.9, weight_decay=1e-4, schedule="multistep",
               milestones=(120, 160), epochs=200, batch_size=256, image_size=224, augment="a_simclr"),
        # B's MoCo (sec. IV-E.2): SGD lr 0.015, momentum 0.9, wd 1e-4, batch 128, cosine schedule
        # over the run. B gives no SSL epoch count: MoCo's default of 200.
        Recipe("b_moco", "He et al. 2020, sec. IV-E.2", "sgd", lr=0.015, momentum=0.9, weight_decay=1e-4,
               schedule="cosine", cosine_period=200, epochs=200, batch_size=128, image_size=224,
               augment="b_moco_v2"),
        # rotation prediction as a separate SSL stage, with B's SSL optimiser
        Recipe("b_rotation_ssl", "He et al. 2020, sec. IV-E.1-2", "sgd", lr=0.015, momentum=0.9,
               weight_decay=1e-4, schedule="cosine", cosine_period=200, epochs=200, batch_size=128,
               image_size=224, augment="b_supervised"),
    )
}

def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def scale_recipe(recipe: Recipe, profile: str | Profile) -> Recipe:
    """The recipe at a profile (:mod:`covtl.profiles`); ``paper`` returns it unchanged.

    The profile sets the epochs of each recipe; schedule epochs (steps, milestones, cosine
    period) scale along, so a schedule keeps its shape. When the batch is capped, an SGD
    learning rate scales linearly with it, with the gradual warm-up that goes with that rule
    (Goyal et al. 2017: 5 epochs, here at most half the run); Adam's lr does not scale.
    """
    p = get_profile(profile)
    if not p.scales:
        return recipe
    epochs = min(recipe.epochs, p.epochs_for(recipe.name, recipe.epochs))
    ratio = epochs / recipe.epochs

    def scaled(e: int) -> int:
        return max(1, round(e * ratio))

    batch_size = min(recipe.batch_size, p.max_batch or recipe.batch_size)
    sgd = recipe.optimizer == "sgd"
    lr = recipe.lr * batch_size / recipe.batch_size if sgd else recipe.lr
    return recipe.replace(
        warmup_epochs=min(p.warmup_epochs, epochs / 2) if sgd else 0.0,
        epochs=epochs,
        lr=lr,
        image_size=p.image_size or recipe.image_size,
        batch_size=batch_size,
        step_size=scaled(recipe.step_size) if recipe.step_size else 0,
        milestones=tuple(scaled(m) for m in recipe.milestones),
        # the cosine keeps its number of half periods (B: 5 in 50 epochs, so the run ends annealed)
        cosine_period=recipe.cosine_period * ratio,
        max_steps_per_epoch=p.max_steps_per_epoch,
    )
