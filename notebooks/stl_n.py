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
# # STL-N: supervised pretraining on natural images
#
# Paper A's first source task (sec. 4.1, 6.2): classify natural images (ImageNet in the paper;
# tiny-imagenet-100c or the synthetic fractal classes here). The network learns generic visual
# features; paper A's Table 1 reports its validation accuracy, and paper B's "Trans." networks
# start from such weights.
#
# Run it with papermill, e.g.
# `papermill notebooks/stl_n.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/stl_n.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/stl_n"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
num_workers: int = -1  # DataLoader worker processes; -1: auto (0 on CPU, min(8, cores // jobs) on CUDA)
recipe: str = "a_stl_n"  # training recipe (covtl.recipes.RECIPES)

# %%
from covtl.report import show
from covtl.stages import StageConfig, supervised_source_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads, num_workers=num_workers)
cfg

# %%
result = supervised_source_stage(cfg, "natural", recipe)

# %% [markdown]
# ## Result

# %%
show(result)
