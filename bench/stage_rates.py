"""The figures of ``bench/plan_rates.py`` for this engine: one short run of each cpu-profile stage.

``plan_rates.py`` reads a recorded study, made with the engine of its day. This runs one run of
each kind of training the cpu plan holds -- STL-N (Tiny-ImageNet-100, 8,000 images an epoch,
5,000 validation images), STL-M (COVIDx), each SSL method of SSTL-M on COVID19-CT, and a
fine-tune -- with this checkout's engine, the cpu profile's settings except ``--epochs`` epochs
each, in the study's layout (``--jobs`` processes at once, one thread each), and prints the same
table: FLOP share, the shares of wall time outside the training step, and the data rate against
the rate the step consumes images.

With few epochs, what a run pays once (test scoring, the last checkpoint, start-up) weighs more
than in the study's runs; the per-epoch shares (data, step, validation) are representative. The
decoded-image caches (``$COVTL_CACHE``, built once per dataset and size and kept) should exist
already, from a study or an earlier invocation: a cache built here counts as the runner's time.

    python bench/stage_rates.py [--data ../shared/data] [--epochs 1] [--jobs 2] [--out /tmp/covtl-stage-rates]

The runs' rows are kept in ``--out/rows.json``: ``bench/plan_rates.py rows.json --matmul X``
prints them again against another matrix-multiply rate (to compare with a recorded study).

Asserts nothing: this is a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import torch
from models import matmul_flops
from plan_rates import print_table, run_row

from covtl.profiles import PROFILES, get_profile

PROFILE = "stage-rates"  # the cpu profile with this benchmark's epochs

#: (notebook, stage function, its arguments, the run's parameters beyond the backbone)
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("stl_n", "supervised_source_stage", {"dataset": "natural", "recipe_name": "a_stl_n"}),
    ("stl_m", "supervised_source_stage", {"dataset": "covidx", "recipe_name": "a_stl_m"}),
    ("sstl_m", "ssl_stage", {"method": "a_region_moco", "recipe_name": "a_sstl_m"}),
    ("sstl_m", "ssl_stage", {"method": "moco_v1", "recipe_name": "a_moco"}),
    ("sstl_m", "ssl_stage", {"method": "moco_v2", "recipe_name": "b_moco"}),
    ("sstl_m", "ssl_stage", {"method": "simclr", "recipe_name": "a_simclr"}),
    ("finetune", "finetune_stage", {"recipe_name": "b_random_init"}),
]


def bench_profile(epochs: int):
    cpu = get_profile("cpu")
    return dataclasses.replace(cpu, name=PROFILE, epochs=dict.fromkeys(cpu.epochs, epochs))


def _worker(task: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    PROFILES[PROFILE] = bench_profile(task["epochs"])  # this process's registry
    from covtl import stages

    cfg = stages.StageConfig(profile=PROFILE, data_root=task["data"], seed=0, backbone="resnet18",
                             out_dir=task["out"])
    t0 = time.perf_counter()
    record = getattr(stages, task["stage"])(cfg, **task["args"])
    return {"notebook": task["notebook"], "args": task["args"], "wall_s": time.perf_counter() - t0,
            "metrics": {"timing": record["timing"], "history": record["history"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/covtl-stage-rates"))
    args = ap.parse_args()
    PROFILES[PROFILE] = bench_profile(args.epochs)
    torch.set_num_threads(1)
    mm = matmul_flops()
    tasks = [{"notebook": nb, "stage": stage, "args": kw, "epochs": args.epochs, "data": str(args.data),
              "out": str(args.out / "runs" / f"{i}-{nb}-{kw.get('method', kw['recipe_name'])}")}
             for i, (nb, stage, kw) in enumerate(RUNS)]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        done = pool.map(_worker, tasks, chunksize=1)
    rows = []
    for d in done:
        params = {"profile": PROFILE, "backbone": "resnet18", "n_attn": 0,
                  "recipe": d["args"]["recipe_name"], "method": d["args"].get("method", "")}
        rows.append(run_row(d["notebook"], params, d["metrics"], d["wall_s"]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1) + "\n")  # for plan_rates.py --matmul
    print(f"this engine, cpu profile at {args.epochs} epoch(s) per run, {args.jobs} jobs x 1 thread; "
          f"matmul {mm / 1e9:.1f} GFLOP/s with 1 thread")
    print_table(rows, mm)


if __name__ == "__main__":
    main()
