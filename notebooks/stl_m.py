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
# # STL-M: supervised pretraining on chest X-rays
#
# Paper A's second source task (sec. 4.2, 6.2): classify chest X-rays as normal, pneumonia or
# COVID-19 (COVIDx format). It usually starts from the STL-N checkpoint (`init`), moving the
# features closer to the medical target domain. COVIDx has no validation split: 10% of the
# training patients are held out for model selection.
#
# Run it with papermill, e.g.
# `papermill notebooks/stl_m.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/stl_m.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/stl_m"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
num_workers: int = -1  # DataLoader worker processes; -1: auto (0 on CPU, min(8, cores // jobs) on CUDA)
recipe: str = "a_stl_m"  # training recipe (covtl.recipes.RECIPES)

# %%
from covtl.report import show
from covtl.stages import StageConfig, supervised_source_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads, num_workers=num_workers)
cfg

# %%
result = supervised_source_stage(cfg, "covidx", recipe)

# %% [markdown]
# ## Result

# %%
show(result)
