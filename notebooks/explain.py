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
# # Explanations: Grad-CAM and attention maps
#
# Where a fine-tuned network looks (paper A Fig. 4, paper B Fig. 5): Grad-CAM of the last
# convolutional stage and, for networks with attention blocks, the last block's attention
# averaged over query positions. Both are scored against infection masks (medseg layout): the
# pointing game and the fraction of the map's energy inside the mask.
#
# Run it with papermill, e.g.
# `papermill notebooks/explain.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/explain.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/explain"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1
threads: int = 0  # torch CPU threads; 0: as the process has them (covtl study: cores // jobs)
n_figure: int = 4  # images kept for the figure

# %%
from covtl.report import show
from covtl.stages import StageConfig, explain_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device, threads=threads)
cfg

# %%
result = explain_stage(cfg, n_figure)

# %% [markdown]
# ## Result

# %%
show(result)
