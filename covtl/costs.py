"""What a study plan costs before it runs: measured per-image costs, a cost per run, a schedule.

``covtl/costs.json`` holds per-image seconds measured on the reference machine by
``bench/costs.py`` (one training step = forward, backward and optimiser step of a batch of 32,
one evaluation = a forward pass; one thread per process, as :func:`covtl.study.run_study` runs
two processes on two cores): per network, attention blocks and image size, plus each
self-supervised method's cost relative to a supervised step. :func:`run_seconds` turns a run of
the plan into images processed times those costs, and :func:`schedule` replays the runner's
order (``jobs`` runs at once, each after its upstream run) to give the plan's wall time.

The estimate covers training, validation, test scoring and a fixed per-run overhead (kernel
reset, decoded-image cache, bootstrap, records; measured); it is a plan-level budget, checked
against measured runs in the note of the issue that introduced it, not a promise per run.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["COSTS_FILE", "REAL_SIZES", "CostModel", "data_sizes", "load_costs", "run_seconds", "schedule"]

COSTS_FILE = Path(__file__).with_name("costs.json")


@dataclass(frozen=True)
class CostModel:
    """Per-image seconds by ``"<network>-a<n_attn>-<px>"`` (train, eval), SSL factors, overheads."""

    train: dict[str, float]
    eval: dict[str, float]
    ssl_factor: dict[str, float]  # SSL method step / supervised step, same network, batch and size
    run_overhead_s: float  # per run: kernel reset, imports, cache look-up, bootstrap, records
    audit_s: float  # the split audit (perceptual hashes of every image)
    machine: str
    parallel_slowdown: float = 1.0  # a run beside another one on the other core takes this much longer

    def per_image(self, kind: str, backbone: str, n_attn: int, size: int) -> float:
        table = self.train if kind == "train" else self.eval
        key = f"{backbone}-a{n_attn}-{size}"
        if key in table:
            return table[key]
        # an unmeasured size: interpolate linearly in pixels between the measured sizes around it,
        # or scale the nearest one by pixels outside their range
        same = sorted((int(k.rsplit("-", 1)[1]), v) for k, v in table.items()
                      if k.startswith(f"{backbone}-a{n_attn}-"))
        if not same:
            raise KeyError(f"no measured cost for {backbone} with {n_attn} attention blocks; "
                           "rerun bench/costs.py --write to measure it")
        below = [(px, v) for px, v in same if px < size]
        above = [(px, v) for px, v in same if px > size]
        if below and above:
            (p0, v0), (p1, v1) = below[-1], above[0]
            w = (size**2 - p0**2) / (p1**2 - p0**2)
            return v0 + w * (v1 - v0)
        px, v = (below or above)[-1 if below else 0]
        return v * (size / px) ** 2


def load_costs(path: Path = COSTS_FILE) -> CostModel:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} is missing: run `python bench/costs.py --write` to measure this machine")
    d = json.loads(Path(path).read_text())
    return CostModel(d["train"], d["eval"], d["ssl_factor"], d["run_overhead_s"], d["audit_s"], d["machine"],
                     d.get("parallel_slowdown", 1.0))


#: images per split of the real data sets as ``../shared/data`` holds them (the cpu profile's data)
REAL_SIZES = {"covid-ct/train": 425, "covid-ct/val": 118, "covid-ct/test": 203, "covidx/train": 491,
              "covidx/test": 113, "natural/train": 20_000, "natural/val": 5_000, "lung-ct-unlabeled/train": 1_600,
              "medseg/all": 50}


def data_sizes(data_root: str | None, real: bool = False) -> dict[str, int]:
    """Images per dataset split: counted in a data root; without one, the real sets' counts
    (``real``) or the embedded synthetic data's."""
    if not data_root and real:
        return dict(REAL_SIZES)
    if data_root:
        from .data import datasets as ds

        root = Path(data_root)
        sizes = {}
        for name, splits in (("covid-ct", ("train", "val", "test")), ("covidx", ("train", "test")),
                             ("natural", ("train", "val")), ("lung-ct-unlabeled", ("train",)),
                             ("medseg", ("all",))):
            folder = ds.locate(root, name)
            for split in splits:
                sizes[f"{name}/{split}"] = len(ds.load_dataset(name, folder, split, None).records)
        return sizes
    from .data.synth import SCALES

    s = SCALES["default"]
    return {"covid-ct/train": s.covid[0] + s.noncovid[0], "covid-ct/val": s.covid[1] + s.noncovid[1],
            "covid-ct/test": s.covid[2] + s.noncovid[2], "covidx/train": sum(s.cxr_train),
            "covidx/test": sum(s.cxr_test), "natural/train": s.natural_classes * s.natural_train,
            "natural/val": s.natural_classes * s.natural_val,
            "lung-ct-unlabeled/train": s.volumes * s.volume_slices, "medseg/all": s.medseg_pairs}


def _cap(n: int, cap: int | None) -> int:
    return n if cap is None else min(n, cap)


def run_seconds(run: Any, profile: str, sizes: dict[str, int], costs: CostModel) -> float:
    """Estimated seconds of one run of the plan (a :class:`covtl.study.Run`) on the costs' machine."""
    from .profiles import get_profile
    from .recipes import get_recipe, scale_recipe
    from .ssl import cost_method
    from .train import steps_per_epoch

    prof = get_profile(profile)
    p = dict(run.params)
    if run.notebook == "split_audit":
        return costs.audit_s + costs.run_overhead_s
    bb, n_attn = p["backbone"], p.get("n_attn", 0)
    size = scale_recipe(get_recipe(p.get("recipe", "a_finetune")), profile).image_size
    ev = costs.per_image("eval", bb, n_attn, size)
    if run.notebook == "transferability":
        return _cap(sizes["covid-ct/train"], prof.max_train) * ev + costs.run_overhead_s
    if run.notebook == "explain":
        return 3 * _cap(sizes["medseg/all"], prof.max_eval) * ev + costs.run_overhead_s  # Grad-CAM: fwd + bwd
    recipe = scale_recipe(get_recipe(p["recipe"]), profile)
    tr = costs.per_image("train", bb, n_attn, size)
    if run.notebook == "sstl_m":
        n = _cap(sizes[f"{p['dataset']}/train"], prof.max_train)
        steps = steps_per_epoch(n, recipe, full_batches=True)
        method = cost_method(p["method"], p.get("region_weight"))
        return recipe.epochs * min(n, steps * recipe.batch_size) * tr * costs.ssl_factor[method] \
            + costs.run_overhead_s
    dataset = {"stl_n": "natural", "stl_m": "covidx", "finetune": "covid-ct"}[run.notebook]
    n_train = sizes[f"{dataset}/train"]
    if dataset == "covidx":  # 10% of the training patients become the validation split
        n_val, n_test = round(0.1 * n_train), sizes["covidx/test"]
        n_train -= n_val
    elif dataset == "natural":
        n_val, n_test = sizes["natural/val"], 0
        if prof.max_classes:  # both natural sets have 100 balanced classes
            share = min(1.0, prof.max_classes / 100)
            n_train, n_val = round(n_train * share), round(n_val * share)
    else:
        n_val, n_test = sizes["covid-ct/val"], sizes["covid-ct/test"]
    n_train, n_val, n_test = (_cap(n_train, prof.max_train), _cap(n_val, prof.max_eval),
                              _cap(n_test, prof.max_eval))
    if recipe.max_steps_per_epoch:
        n_train = min(n_train, recipe.max_steps_per_epoch * recipe.batch_size)
    if recipe.freeze_backbone:
        tr = ev * 1.1  # a frozen extractor: forward only, plus the head's backward
    if recipe.rotation_aux:
        tr = 2 * tr  # B's Method 4: the batch for the classifier plus a rotated copy for the rotation head
    return recipe.epochs * (n_train * tr + n_val * ev) + 2 * n_test * ev + costs.run_overhead_s


def schedule(runs: list[Any], seconds: dict[str, float], jobs: int, slowdown: float = 1.0) -> float:
    """Wall time of running ``runs`` (upstream first) ``jobs`` at a time, in plan order, each
    after its upstream run, as :func:`covtl.study.run_study` does."""
    pending = list(runs)
    finished_at: dict[str, float] = {}
    running: list[tuple[float, str]] = []  # (end time, run id) heap
    now = 0.0
    while pending or running:
        started = True
        while started and len(running) < jobs:
            started = False
            for run in pending:
                if run.upstream is None or run.upstream.id in finished_at:
                    pending.remove(run)
                    heapq.heappush(running, (now + seconds[run.id] * (slowdown if jobs > 1 else 1.0), run.id))
                    started = True
                    break
        if not running:
            raise RuntimeError("runs wait for upstream runs that are not in the plan")
        now, rid = heapq.heappop(running)
        finished_at[rid] = now
    return now
