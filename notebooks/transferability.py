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
# # Transferability: LEEP, NCE, LogME and H-score
#
# How well a checkpoint's features (and its source head) suit the target task before any
# fine-tuning (paper A, sec. 5.5, Table 6): LEEP and NCE use the source classifier's
# predictions, LogME and H-score the penultimate features, all on the COVID19-CT training split.
# A randomly initialised network (`init = ""`) gets a random head of `source_classes` outputs.
#
# Run it with papermill, e.g.
# `papermill notebooks/transferability.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/transferability.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/transferability"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
source_classes: int = 1000  # outputs of the random head when init is empty

# %%
from covtl.report import show
from covtl.stages import StageConfig, transferability_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads)
cfg

# %%
result = transferability_stage(cfg, source_classes)

# %% [markdown]
# ## Result

# %%
show(result)
