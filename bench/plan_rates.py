"""How close a recorded study's runs came to the machine: FLOP share, overhead, data rate per stage.

Reads every training run a study wrote (``<results>/runs/*/run.json`` and ``metrics.json``: the
timing ``fit()`` records, the images of each epoch) and prints, per stage and over the plan:

- **FLOP share**: training FLOPs (images trained x forward passes per image of the run's method,
  :data:`covtl.compute.FLOP_FACTORS`, x forward FLOPs of one image at the run's size, counted by
  torch's FlopCounterMode, so depthwise convolutions count their true FLOPs) divided by the time
  in the training step, as a share of the single-thread float32 matrix-multiply FLOP/s measured
  in this invocation (the study runs one thread per job; ``--matmul`` gives a rate instead).
  ``of wall``: the same FLOPs over the run's whole wall time, runner included;
- **outside the step**: the share of a run's wall time not spent in training steps (waiting
  for data, validation, checkpoints, test scoring, and the runner's own start-up and records);
- **data rate**: images the loader delivered per second of waiting for it (with no worker
  processes, the whole cost of decoding and augmenting) against images the step consumed per
  second: "the data never waits" needs a ratio of 3 or more.

    python bench/plan_rates.py [results/cpu] [--matmul 8.5e10] [--backbone resnet18 --n-attn 0]
    python bench/plan_rates.py /tmp/covtl-stage-rates/rows.json   # what bench/stage_rates.py ran

Asserts nothing: this is a measurement of runs already made.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import torch
from models import matmul_flops

from covtl.compute import FLOP_FACTORS, flop_factor, flops_per_image
from covtl.recipes import get_recipe, scale_recipe

TIMING = ("step_s", "data_s", "val_s", "checkpoint_s", "test_s")


def run_row(notebook: str, params: dict, metrics: dict, wall_s: float) -> dict:
    """One training run's FLOPs, images and timing (``params`` as the plan gives them)."""
    recipe = scale_recipe(get_recipe(params["recipe"]), params["profile"])
    factor = flop_factor(notebook, params, recipe)
    images = sum(h.get("images", 0) for h in metrics["history"])
    fwd = flops_per_image(params["backbone"], params.get("n_attn", 0), recipe.image_size)
    return {"stage": notebook, "factor": factor, "backbone": params["backbone"], "n_attn": params.get("n_attn", 0),
            "images": images, "wall_s": wall_s,
            "flops": images * FLOP_FACTORS[factor] * fwd, **metrics["timing"]}


def run_rows(results: Path) -> list[dict]:
    rows = []
    for run_json in sorted(results.glob("runs/*/run.json")):
        run = json.loads(run_json.read_text())
        metrics_path = run_json.with_name("metrics.json")
        if run.get("status") != "done" or not metrics_path.exists():
            continue
        metrics = json.loads(metrics_path.read_text())
        if "timing" in metrics:  # audit, transferability, explain: no training
            rows.append(run_row(run["notebook"], run["params"], metrics, run["wall_time_s"]))
    return rows


def print_table(rows: list[dict], matmul: float) -> None:
    """Per stage (SSL methods apart) and over all ``rows``: the figures of the module docstring."""
    groups = collections.defaultdict(list)
    for r in sorted(rows, key=lambda r: (r["stage"], r["factor"])):
        groups[r["stage"]].append(r)
        if r["stage"] == "sstl_m":  # the SSL methods differ in cost per FLOP
            groups[f"  {r['factor']}"].append(r)
    groups["all runs"] = rows
    print(f"{'stage':14s} {'runs':>4s} {'hours':>6s} {'FLOP share':>10s} {'of wall':>7s} {'outside':>7s} "
          f"{'(data':>6s} {'val':>5s} {'ckpt':>5s} {'test':>5s} {'runner)':>7s} {'data img/s':>10s} "
          f"{'step img/s':>10s} {'ratio':>6s}")
    for stage, rs in groups.items():
        s = {k: sum(r[k] for r in rs) for k in (*TIMING, "wall_s", "flops", "images")}
        runner = s["wall_s"] - sum(s[k] for k in TIMING)
        shares = [s[k] / s["wall_s"] for k in TIMING[1:]] + [runner / s["wall_s"]]
        print(f"{stage:14s} {len(rs):4d} {s['wall_s'] / 3600:6.2f} {s['flops'] / s['step_s'] / matmul:10.2f} "
              f"{s['flops'] / s['wall_s'] / matmul:7.2f} {1 - s['step_s'] / s['wall_s']:7.1%} "
              + " ".join(f"{x:5.1%}" for x in shares)
              + f" {s['images'] / s['data_s']:10.0f} {s['images'] / s['step_s']:10.1f} "
                f"{s['step_s'] / s['data_s']:6.1f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, nargs="?", default=Path(__file__).resolve().parents[1] / "results" / "cpu")
    ap.add_argument("--matmul", type=float, default=None, help="single-thread matmul FLOP/s (default: measure)")
    ap.add_argument("--backbone", default=None, help="only the runs of this network")
    ap.add_argument("--n-attn", type=int, default=None, help="only the runs with this many attention blocks")
    args = ap.parse_args()
    if args.results.suffix == ".json":
        rows = json.loads(args.results.read_text())
    else:
        rows = run_rows(args.results)
    rows = [r for r in rows if args.backbone in (None, r["backbone"]) and args.n_attn in (None, r["n_attn"])]
    if not rows:
        raise SystemExit(f"no finished training runs (of that network) under {args.results}: give a study's "
                         "results folder or the rows.json of bench/stage_rates.py")
    torch.set_num_threads(1)
    mm = args.matmul or matmul_flops()
    print(f"{args.results}: {len(rows)} training runs; matmul {mm / 1e9:.1f} GFLOP/s with 1 thread")
    print_table(rows, mm)


if __name__ == "__main__":
    main()
