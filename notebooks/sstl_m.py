# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # SSTL-M: self-supervised pretraining on CT images
#
# The self-supervised stage of both papers: MoCo (paper B's Self-Trans; `moco_v2`), SimCLR,
# rotation prediction, or paper A's method (`a_region_moco`: MoCo plus the lung-lobe region
# task). Labels are never used. `dataset` is `covid-ct` (its training split) or
# `lung-ct-unlabeled` (paper B's LUNA stage). `region_weight` is paper A's alpha2 for
# `a_region_moco`; at 0 the region task is skipped and the run is plain MoCo under A's recipe.
#
# Run it with papermill, e.g.
# `papermill notebooks/sstl_m.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/sstl_m.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/sstl_m"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
num_workers: int = -1  # DataLoader worker processes; -1: auto (0 on CPU, min(8, cores // jobs) on CUDA)
method: str = "a_region_moco"  # moco_v1 | moco_v2 | a_region_moco | simclr | rotation
recipe: str = "a_sstl_m"  # optimiser recipe (covtl.recipes.RECIPES)
dataset: str = "covid-ct"  # covid-ct | lung-ct-unlabeled
region_weight: float = 0.8  # A's alpha2 (a_region_moco only); 0: plain MoCo with A's settings

# %%
from covtl.report import show
from covtl.stages import StageConfig, ssl_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads, num_workers=num_workers)
cfg

# %%
result = ssl_stage(cfg, method, recipe, dataset, region_weight=region_weight)

# %% [markdown]
# ## Result

# %%
show(result)
