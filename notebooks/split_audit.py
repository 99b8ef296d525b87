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
# # Split audit of COVID19-CT
#
# STUDY.md decision 4: the official split is audited, not trusted. Patients must not cross
# splits (COVID via the MetaInfo workbook, NonCOVID via the MetaInfo and the id files), and
# near-duplicate images (perceptual hash) are listed within and across splits. Also paper B's
# Table I statistics.
#
# Run it with papermill, e.g.
# `papermill notebooks/split_audit.ipynb out.ipynb -p profile quick` after `jupytext --to ipynb notebooks/split_audit.py`,
# or let `covtl study` run it with the right upstream checkpoints.

# %% tags=["parameters"]
profile: str = "quick"  # smoke | quick | cpu | paper (covtl.profiles)
data_root: str = ""  # folder laid out like ../shared/data; empty: the embedded synthetic data
seed: int = 0  # seed of every random generator of the run
backbone: str = "resnet18"  # network, one of covtl.models.MODEL_NAMES
n_attn: int = 0  # non-local attention blocks: 0, 1 or 5 (ResNets only)
init: str = ""  # upstream checkpoint (.pt); empty: random init; imagenet: torchvision weights
out_dir: str = "results/scratch/split_audit"  # where metrics.json and checkpoints are written
device: str = ""  # empty: CUDA if available, else CPU; or e.g. cpu, cuda:1

# %%
from covtl.report import show
from covtl.stages import StageConfig, audit_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, backbone=backbone, n_attn=n_attn,
                  init=init, out_dir=out_dir, device=device)
cfg

# %%
result = audit_stage(cfg)

# %% [markdown]
# ## Result

# %%
show(result)
