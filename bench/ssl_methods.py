"""Self-supervised pretraining throughput per method, and the cost of A's region branch.

Images/s (source images per second; one image = its two views, plus its five lobe regions
for A's method) of one training step of MoCo, SimCLR, rotation prediction and A's region
MoCo on ResNet-50 with 0 and 5 attention blocks at 64 and 128 px. Prints a table and the
region branch's cost factor (A's method time / MoCo time). Asserts nothing.

    python bench/ssl_methods.py [--batch 16] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from covtl.models import build_model
from covtl.ssl import build_ssl

METHODS = ("moco_v1", "simclr", "rotation", "a_region_moco")


def step_rate(method: str, n_attn: int, size: int, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    extra = {"queue_size": 4096} if "moco" in method else {}
    task = build_ssl(method, build_model("resnet50", num_classes=2, n_attn=n_attn), **extra).train()
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    views = [torch.randn(batch, 3, size, size), torch.randn(batch, 3, size, size)]
    if method == "a_region_moco":
        views.append(torch.randn(batch, 5, 3, size, size))
    batch_ = {"image": views}
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        task(batch_).backward()
        opt.step()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}\n")
    print(f"{'method':<16}{'ATTN':>5}{'px':>5}{'img/s':>9}")
    for n_attn in (0, 5):
        for size in args.sizes:
            rates = {}
            for method in METHODS:
                rates[method] = step_rate(method, n_attn, size, args.batch, args.steps)
                print(f"{method:<16}{n_attn:>5}{size:>5}{rates[method]:>9.1f}", flush=True)
            print(f"  region branch cost factor (A's method vs MoCo): "
                  f"{rates['moco_v1'] / rates['a_region_moco']:.1f}x\n", flush=True)


if __name__ == "__main__":
    main()
