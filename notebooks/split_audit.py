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
out_dir: str = "results/scratch/split_audit"  # where metrics.json and the audit tables are written

# %%
from covtl.report import show
from covtl.stages import StageConfig, audit_stage

cfg = StageConfig(profile=profile, data_root=data_root, seed=seed, out_dir=out_dir)
cfg

# %%
result = audit_stage(cfg)

# %% [markdown]
# ## Result

# %%
show(result)
