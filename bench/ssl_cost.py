"""What an SSL step costs against a supervised step, beside what the FLOP model says it should.

Issue 12's target: a MoCo / region-MoCo step costs at most 1.15x its FLOP count relative to a
supervised step of the same backbone and batch. For each backbone this times (median of
``--steps`` after two warm-up steps, one thread, channels-last as ``fit()`` runs it) a supervised
step on ``b_supervised`` views and a step of each method on its real views of COVID19-CT images
(``a_sstl_m``'s two crops, plus the five lobe regions for A's method), and prints

    measured ratio (method step / supervised step), the FLOP model's ratio
    (covtl.compute.FLOP_FACTORS), and their quotient: the cost per FLOP (target <= 1.15).

    python bench/ssl_cost.py [--data ../shared/data/covid-ct] [--size 64] [--batch 16]
        [--backbones resnet18 resnet50] [--steps 8]

Asserts nothing: this is a measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from covtl.compute import FLOP_FACTORS
from covtl.models import build_model
from covtl.ssl import build_ssl
from covtl.stages import _SSLViews

METHODS = (("moco_v2", "moco", False), ("a_region_moco", "region_moco", True))


class Supervised(torch.nn.Module):
    """A supervised step as a task (cross-entropy on the network's logits)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.model(batch["image"][0]), batch["label"])


def step_time(task: torch.nn.Module, batch: dict, steps: int) -> float:
    task.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        loss = task(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def views_batch(images: list[Image.Image], stage: str, size: int, regions: bool) -> list[torch.Tensor]:
    views = _SSLViews(stage, size, regions)
    per = [views(im) for im in images]
    stacked = [torch.stack([p[i] for p in per]) for i in range(len(per[0]))]
    return [v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in stacked]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/covid-ct")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = sorted(args.data.rglob("*.png"))[: args.batch]
    if len(files) < args.batch:
        raise SystemExit(f"{args.data} holds {len(files)} PNG images; need {args.batch} (COVID19-CT's layout)")
    images = [Image.open(f).convert("RGB") for f in files]
    for arch in args.backbones:
        torch.manual_seed(0)
        sup = {"image": views_batch(images, "b_supervised", args.size, False)[:1],
               "label": torch.randint(0, 2, (args.batch,))}
        t_sup = step_time(Supervised(build_model(arch, num_classes=2)), sup, args.steps)
        for method, factor, regions in METHODS:
            task = build_ssl(method, build_model(arch, num_classes=2), queue_size=4 * args.batch)
            t = step_time(task, {"image": views_batch(images, "a_sstl_m", args.size, regions)}, args.steps)
            model = FLOP_FACTORS[factor] / FLOP_FACTORS["supervised"]
            print(f"{arch} {args.size} px batch {args.batch} {method:14s} {t:.3f} s/step vs supervised "
                  f"{t_sup:.3f}: {t / t_sup:.2f}x; FLOP model {model:.2f}x; cost per FLOP {t / t_sup / model:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
