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
# # Fine-tuning on COVID19-CT
#
# The target task of both papers: COVID vs NonCOVID on COVID19-CT's official split. Model
# selection uses the validation split only; the test split is scored once, for the last-epoch
# and the best-validation network, with 95% intervals from a patient-level bootstrap. COVID is
# the positive class (the NonCOVID-positive numbers of the official Self-Trans code are kept
# alongside).
#
# Run it with papermill, e.g.
# `papermill notebooks/finetune.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/finetune.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/finetune"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
num_workers: int = -1  # DataLoader worker processes; -1: auto (0 on CPU, min(8, cores // jobs) on CUDA)
recipe: str = "a_finetune"  # a_finetune | b_transfer | b_random_init | b_transfer_frozen | b_rotation_joint

# %%
from covtl.report import show
from covtl.stages import StageConfig, finetune_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads, num_workers=num_workers)
cfg

# %%
result = finetune_stage(cfg, recipe)

# %% [markdown]
# ## Result

# %%
show(result)
