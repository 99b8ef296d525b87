"""What the study costs at the papers' scale, in FLOPs and GPU-hours, from the plan (no training).

A run's training cost is

    FLOPs = E * N * k * F,    GPU-hours = FLOPs / T / 3600,

E: the run's epochs (its recipe at the profile), N: images per epoch of its dataset at paper
scale (:data:`PAPER_SCALE_IMAGES`), k: forward passes per training image
(:data:`FLOP_FACTORS`), F: forward FLOPs of one image through its network at its image size
(:func:`flops_per_image`), T: an *assumed* sustained throughput (:data:`ASSUMED_THROUGHPUT`).

The CPU-time model of the small profiles, measured rather than assumed, is :mod:`covtl.costs`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from .paper import load_paper_numbers

__all__ = ["ASSUMED_THROUGHPUT", "FLOP_FACTORS", "GPU_STEPS_FILE", "PAPER_SCALE_IMAGES", "compute_assumptions",
           "compute_estimate", "flop_factor", "flops_per_image", "measured_estimate", "step_key"]

#: images per epoch of each source dataset at the paper's scale (the study's data are smaller)
PAPER_SCALE_IMAGES: dict[str, int] = {
    "natural": 1_281_167,  # ImageNet-1k (ILSVRC 2012) training images; paper A sec. 6.2 "1.2 million"
    "covidx": 16_898,  # paper A sec. 6.1: COVIDx "contains 16898 images in total" (its train split is smaller)
    "lung-ct-unlabeled": 1_000,  # paper B sec. IV-A: 500 LUNA subjects, two slices each
    # covid-ct: the training split of paper B's Table I (book/data/paper_numbers.csv)
}
#: forward passes (in units of one forward, a backward = two) per training image and method
FLOP_FACTORS: dict[str, float] = {
    "supervised": 3,  # forward + backward
    "frozen": 1,  # forward through a frozen backbone; the linear head is negligible
    "moco": 4,  # query forward + backward (3), key forward (1)
    "simclr": 6,  # two views, both with gradients
    "region_moco": 19,  # MoCo (4) + five lobe regions at the input size, forward + backward (15)
    "rotation": 3,  # one rotated view, forward + backward (B's rotation-prediction SSL stage)
    "rotation_joint": 6,  # B's Method 4: the images for the classifier and a rotated copy for the rotation head
    "score": 1,  # transferability: one forward pass over the target training split, once
}
#: measured training steps of the paper profile on one GPU (bench/gpu_check.py writes it)
GPU_STEPS_FILE = Path(__file__).resolve().parents[1] / "results" / "gpu" / "paper-steps.json"
#: assumed sustained training throughput of one GPU, FLOP/s (stated on the compute page)
ASSUMED_THROUGHPUT = 30e12


@cache
def flops_per_image(backbone: str, n_attn: int = 0, size: int = 224, num_classes: int = 2) -> float:
    """Forward FLOPs of one image (torch.utils.flop_counter, on the meta device: nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    with torch.device("meta"):
        model = build_model(backbone, num_classes=num_classes, **({"n_attn": n_attn} if n_attn else {})).eval()
        x = torch.empty(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


@cache
def _covid_ct_train_images() -> int:
    """COVID19-CT's training images as paper B's Table I gives them."""
    b1 = load_paper_numbers().query("table == 'B1' and metric == 'images'")
    return int(b1[b1.setting.str.startswith("train/")].value.sum())


def _images_per_epoch(notebook: str, params: Mapping[str, Any]) -> tuple[str, int]:
    dataset = {"stl_n": "natural", "stl_m": "covidx", "finetune": "covid-ct",
               "transferability": "covid-ct"}.get(notebook, params.get("dataset", "covid-ct"))
    return dataset, PAPER_SCALE_IMAGES.get(dataset, _covid_ct_train_images())


def flop_factor(notebook: str, params: Mapping[str, Any], recipe) -> str:
    """The key of :data:`FLOP_FACTORS` that a run of ``notebook`` with ``params`` and ``recipe`` does."""
    if notebook == "transferability":
        return "score"
    if notebook == "sstl_m":
        from .ssl import cost_method

        method = cost_method(params.get("method", ""), params.get("region_weight"))
        return {"a_region_moco": "region_moco", "simclr": "simclr", "rotation": "rotation"}.get(
            method, "moco" if method.startswith("moco") else "supervised")
    if recipe is not None and recipe.freeze_backbone:
        return "frozen"
    return "rotation_joint" if recipe is not None and recipe.rotation_aux else "supervised"


def step_key(notebook: str, factor: str, backbone: str, n_attn: int, batch: int) -> str:
    """One distinct training step of a plan: what ``bench/gpu_check.py`` times once."""
    return f"{notebook}/{factor}/{backbone}-a{n_attn}/b{batch}"


def compute_estimate(profile: str = "paper",
                     throughput: float = ASSUMED_THROUGHPUT) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Estimated training FLOPs and GPU-hours of every run of ``build_plan(profile)``, and per table.

    Evaluation passes (validation each epoch, test once) and the split audit / explain runs are
    left out (a few percent at most). Images per epoch are the paper-scale sizes of
    :data:`PAPER_SCALE_IMAGES` whatever the profile. Per table, a run shared by several tables
    counts in each; the total counts it once.
    """
    from .study import build_plan

    plan = build_plan(profile)
    per_run = _per_run(plan, profile, throughput)
    return per_run, _per_table(plan, per_run, ["GPU-hours"])


def _per_run(plan, profile: str, throughput: float) -> pd.DataFrame:
    """:func:`compute_estimate`'s per-run frame for an already built ``plan`` of ``profile``."""
    from .recipes import get_recipe, scale_recipe

    rows = []
    for run in plan.runs:
        p = dict(run.params)
        if run.notebook in ("split_audit", "explain"):
            continue
        recipe = scale_recipe(get_recipe(p["recipe"]), profile) if "recipe" in p else None
        epochs = recipe.epochs if recipe is not None else 1
        size = recipe.image_size if recipe is not None else scale_recipe(get_recipe("a_finetune"), profile).image_size
        dataset, images = _images_per_epoch(run.notebook, p)
        factor = flop_factor(run.notebook, p, recipe)
        fwd = flops_per_image(p["backbone"], p.get("n_attn", 0), size)
        flops = epochs * images * FLOP_FACTORS[factor] * fwd
        step = step_key(run.notebook, factor, p["backbone"], p.get("n_attn", 0),
                        recipe.batch_size if recipe is not None else 0)
        rows.append({"run": run.id, "step": step, "notebook": run.notebook, "backbone": p["backbone"],
                     "n_attn": p.get("n_attn", 0),
                     "dataset": dataset, "images/epoch": images, "epochs": epochs, "size": size, "factor": factor,
                     "forward GFLOPs/image": fwd / 1e9, "PFLOPs": flops / 1e15,
                     "GPU-hours": flops / throughput / 3600})
    return pd.DataFrame(rows).set_index("run")


def _per_table(plan, per_run: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Sums of ``columns`` per table of ``plan`` (a shared run counts in each) and, last, over the study."""
    per_table = []
    for table in dict.fromkeys(c.table for c in plan.cells):
        ids = {r.id for c in plan.cells if c.table == table for run in c.runs for r in run.chain()}
        ids = sorted(ids & set(per_run.index))
        per_table.append({"table": table, "runs": len(ids), **per_run.loc[ids, columns].sum().to_dict()})
    per_table = pd.DataFrame(per_table).set_index("table")
    per_table.loc["study (each run once)"] = [len(per_run), *per_run[columns].sum()]
    return per_table.astype({"runs": int})


def measured_estimate(path: Path | str | None = None) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """GPU-hours of the paper profile from measured steps (``bench/gpu_check.py``), per table.

    A run's hours are its training images (epochs x images per epoch, as in :func:`compute_estimate`)
    divided by the measured images/s of its step on the record's GPU. A step the record did not
    time (left out for time, out of memory) falls back to the FLOP model at the **median achieved
    FLOP/s of the timed steps**, and its hours are counted in the ``of which not timed`` column.
    Returns the record's header (device, torch, matmul rates, provenance) and the per-table
    frame, or ``None`` when there is no record.
    """
    path = Path(path) if path is not None else GPU_STEPS_FILE
    if not path.is_file():
        return None
    import json

    record = json.loads(path.read_text())
    timed = {step_key(s["notebook"], s["factor"], s["backbone"], s["n_attn"], s["batch"]): s
             for s in record["steps"] if "images_per_s" in s and s.get("batch_timed") == s["batch"]}
    if not timed:
        raise ValueError(f"{path} holds no step timed at its full batch; rerun bench/gpu_check.py on a GPU "
                         "without --batch-cap")
    from .study import build_plan

    fallback = 1e12 * statistics.median(s["achieved_tflops"] for s in timed.values())
    plan = build_plan("paper")
    per_run = _per_run(plan, "paper", ASSUMED_THROUGHPUT)
    images = per_run["epochs"] * per_run["images/epoch"]
    measured = per_run["step"].map(lambda k: timed[k]["images_per_s"] if k in timed else float("nan"))
    per_run["GPU-hours (measured)"] = (images / measured / 3600).where(measured.notna(), 0.0)
    flops = per_run["PFLOPs"] * 1e15
    per_run["of which not timed"] = (flops / fallback / 3600).where(measured.isna(), 0.0)
    per_run["GPU-hours (measured)"] += per_run["of which not timed"]
    table = _per_table(plan, per_run, ["GPU-hours (measured)", "of which not timed"])
    header = {k: record.get(k) for k in ("device_name", "torch", "matmul_tflops", "provenance", "size")}
    header.update(steps_timed=len(timed), steps_in_plan=per_run["step"].nunique(),
                  fallback_tflops=fallback / 1e12, path=str(path))
    return header, table


def compute_assumptions(throughput: float = ASSUMED_THROUGHPUT) -> pd.DataFrame:
    """The constants behind :func:`compute_estimate`, with what they mean."""
    rows = [("assumed sustained throughput, TFLOP/s", throughput / 1e12,
             "mixed-precision training on one A100-class GPU (an assumption, not a measurement)"),
            ("= ResNet-50 training images/s at 224 px", throughput / (FLOP_FACTORS["supervised"]
                                                                      * flops_per_image("resnet50")),
             "what the assumption means for the most common network")]
    rows += [(f"images/epoch: {name}", n, "paper scale") for name, n in
             {**PAPER_SCALE_IMAGES, "covid-ct (train)": _covid_ct_train_images()}.items()]
    rows += [(f"forward passes per image: {name}", k, "") for name, k in FLOP_FACTORS.items()]
    table = pd.DataFrame(rows, columns=["quantity", "value", "meaning"]).set_index("quantity")
    table["value"] = [f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}" for v in table.value]
    return table
