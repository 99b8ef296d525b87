"""covtl's fine-tunes, run the way the study runs them, against a plain torchvision loop.

For every (backbone, image size) it runs the same set of real-data fine-tunes (B's random-init
recipe, the cpu profile's settings, ``--epochs`` epochs, seeds 0..N-1) twice:

- **covtl**: :func:`covtl.stages.finetune_stage` in ``--jobs`` worker processes at once, each with
  ``cores // jobs`` torch threads -- the study's layout (:func:`covtl.study.default_jobs`, and the
  ``OMP_NUM_THREADS`` that ``covtl study`` sets) -- with everything a run computes: per-epoch
  validation, test scoring of the last and the best-validation network, patient-bootstrap
  intervals, predictions, records and checkpoints. The decoded-image cache is built once first
  (the study keeps it across runs);
- **plain**: the same runs one after another in this process with all cores as torch threads:
  torchvision's network, PIL transforms (``bench/pilot.py``'s), Adam, per-epoch validation, the
  test split scored once at the end.

Prints, per configuration, the machine time per run of each side (the set's wall time divided by
its number of runs), their ratio (covtl / plain; the issue's target is <= 0.75), and each side's
achieved training FLOP/s as a share of the dense matrix-multiply FLOP/s measured in the same
invocation (FLOPs counted by torch's FlopCounterMode, training steps x3 forward, evaluation x1).
Writes ``--out/vs_plain.json``. Asserts nothing: this is a measurement.

    python bench/vs_plain.py [--data ../shared/data] [--backbones resnet18 resnet50] [--sizes 64 128]
        [--epochs 3] [--runs 2] [--jobs 2] [--out /tmp/covtl-vs-plain]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from models import matmul_flops
from pilot import SplitImages, cosine_lr, plain_transforms, read_split
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from covtl.profiles import PROFILES, get_profile
from covtl.recipes import get_recipe, scale_recipe

RECIPE = "b_random_init"
PROFILE = "vs-plain"  # the cpu profile with this benchmark's epochs and image size


def bench_profile(size: int, epochs: int):
    cpu = get_profile("cpu")
    return dataclasses.replace(cpu, name=PROFILE, image_size=size, epochs={**cpu.epochs, RECIPE: epochs})


# ---------------------------------------------------------------- covtl side (worker processes)

def _covtl_worker(task: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(task["threads"])
    PROFILES[PROFILE] = bench_profile(task["size"], task["epochs"])  # this process's registry
    from covtl.stages import StageConfig, finetune_stage

    cfg = StageConfig(profile=PROFILE, data_root=task["data"], seed=task["seed"], backbone=task["backbone"],
                      out_dir=task["out"])
    t0 = time.perf_counter()
    rec = finetune_stage(cfg, RECIPE)
    return {"seed": task["seed"], "wall_s": time.perf_counter() - t0, "timing": rec.get("timing", {}),
            "auc": rec["test"]["last"]["covid_positive"]["auc"]["value"]}


def _import_covtl(_: int) -> None:
    import covtl.stages  # noqa: F401
    time.sleep(1.0)  # hold this worker so that every worker gets one


def run_covtl(args: argparse.Namespace, backbone: str, size: int, out: Path) -> dict[str, Any]:
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    base = {"data": str(args.data), "backbone": backbone, "size": size, "epochs": args.epochs, "threads": threads}
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs) as pool:
        # outside the timing, as in the study: worker start and imports (warm kernels keep them) and
        # the decoded-image cache (kept across runs), built by a one-epoch run
        pool.map(_covtl_worker, [{**base, "epochs": 1, "seed": 999, "out": str(out / "warm-up")}])
        pool.map(_import_covtl, range(args.jobs), chunksize=1)
        tasks = [{**base, "seed": s, "out": str(out / f"covtl-s{s}")} for s in range(args.runs)]
        t0 = time.perf_counter()
        runs = pool.map(_covtl_worker, tasks, chunksize=1)
    wall = time.perf_counter() - t0
    return {"side": "covtl", "jobs": args.jobs, "threads_per_job": threads, "wall_s": wall,
            "per_run_s": wall / args.runs, "runs": runs}


# ---------------------------------------------------------------- plain side (this process)

def _evaluate(model: torch.nn.Module, loader: DataLoader) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return torch.cat([torch.softmax(model(x), dim=1)[:, 1] for x, _ in loader])


def run_plain(args: argparse.Namespace, backbone: str, size: int) -> dict[str, Any]:
    torch.set_num_threads(os.cpu_count() or 1)
    recipe = scale_recipe(get_recipe(RECIPE), bench_profile(size, args.epochs))
    root = args.data / "covid-ct"
    tf_train, tf_eval = plain_transforms(size)
    t0, runs = time.perf_counter(), []
    for seed in range(args.runs):
        t_run = time.perf_counter()
        torch.manual_seed(seed)
        train = DataLoader(SplitImages(read_split(root, "train"), tf_train), batch_size=recipe.batch_size,
                           shuffle=True, generator=torch.Generator().manual_seed(seed))
        val = DataLoader(SplitImages(read_split(root, "val"), tf_eval), batch_size=recipe.batch_size)
        test = DataLoader(SplitImages(read_split(root, "test"), tf_eval), batch_size=recipe.batch_size)
        model = torchvision.models.get_model(backbone, weights=None, num_classes=2)
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        step = 0
        for _ in range(recipe.epochs):
            model.train()
            for x, y in train:
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(recipe, step, len(train))
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            _evaluate(model, val)  # per-epoch validation, as covtl's engine does
        _evaluate(model, test)
        runs.append({"seed": seed, "wall_s": time.perf_counter() - t_run})
    wall = time.perf_counter() - t0
    return {"side": "plain", "threads": torch.get_num_threads(), "wall_s": wall, "per_run_s": wall / args.runs,
            "runs": runs}


# ---------------------------------------------------------------- FLOPs

def flops_per_image(backbone: str, size: int) -> tuple[float, float]:
    """(training FLOPs, evaluation FLOPs) per image of covtl's network at ``size`` px."""
    from covtl.models import build_model

    model = build_model(backbone, num_classes=2)
    x = torch.randn(2, 3, size, size)
    with FlopCounterMode(display=False) as fwd:
        model.eval()
        with torch.no_grad():
            model(x)
    ev = fwd.get_total_flops() / 2
    return 3 * ev, ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (both sides)")
    ap.add_argument("--runs", type=int, default=2, help="runs (seeds) per side and configuration")
    ap.add_argument("--jobs", type=int, default=None, help="covtl's parallel runs (default: the study's)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/covtl-vs-plain"))
    args = ap.parse_args()
    from covtl.study import default_jobs

    args.jobs = args.jobs or default_jobs()
    root = args.data / "covid-ct"
    n = {s: len(read_split(root, s)) for s in ("train", "val", "test")}
    torch.set_num_threads(os.cpu_count() or 1)
    mm = matmul_flops()
    print(f"matmul {mm / 1e9:.0f} GFLOP/s with {torch.get_num_threads()} threads; COVID19-CT {n}; "
          f"{args.runs} runs x {args.epochs} epochs per side; covtl: {args.jobs} jobs")
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            out = args.out / f"{backbone}-{size}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            tr, ev = flops_per_image(backbone, size)
            work = args.runs * (args.epochs * (n["train"] * tr + n["val"] * ev) + n["test"] * ev)
            plain = run_plain(args, backbone, size)
            covtl = run_covtl(args, backbone, size, out)
            row = {"backbone": backbone, "size": size, "plain_per_run_s": plain["per_run_s"],
                   "covtl_per_run_s": covtl["per_run_s"], "ratio": covtl["per_run_s"] / plain["per_run_s"],
                   "plain_flop_share": work / plain["wall_s"] / mm, "covtl_flop_share": work / covtl["wall_s"] / mm,
                   "plain": plain, "covtl": covtl}
            timing = [r["timing"] for r in covtl["runs"] if r.get("timing")]
            if timing:  # the work around the training step, as a share of covtl's run wall time
                walls = sum(r["wall_s"] for r in covtl["runs"])
                row["covtl_time_shares"] = {k: sum(t[k] for t in timing) / walls for k in timing[0]}
                row["covtl_overhead_share"] = 1 - row["covtl_time_shares"]["step_s"]
            rows.append(row)
            print(f"{backbone:9s} {size:4d} px  plain {row['plain_per_run_s']:7.1f} s/run  covtl "
                  f"{row['covtl_per_run_s']:7.1f} s/run  ratio {row['ratio']:.2f}  FLOP share plain "
                  f"{row['plain_flop_share']:.2f} covtl {row['covtl_flop_share']:.2f}", flush=True)
            if "covtl_time_shares" in row:
                shares = ", ".join(f"{k.removesuffix('_s')} {v:.1%}" for k, v in row["covtl_time_shares"].items())
                print(f"{'':16s}covtl run wall time: {shares}; outside the training step "
                      f"{row['covtl_overhead_share']:.1%}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_plain.json").write_text(json.dumps({"matmul_flop_s": mm, "epochs": args.epochs,
                                                        "runs": args.runs, "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
