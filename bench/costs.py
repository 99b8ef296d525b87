"""Per-image costs of every network the small profiles run, for ``covtl study --dry-run``.

Measures, one thread per process (the study runs two single-thread processes on two cores),
the seconds per image of a supervised training step (forward, backward, Adam step; batch 32)
and of an evaluation forward pass (batch 64), per network, attention blocks and image size;
and the cost of each self-supervised method's step relative to a supervised step (ResNet-18,
64 px, batch 32). Prints a table; with ``--write`` stores the figures in covtl/costs.json,
which the dry run reads. The per-run overhead and the audit time are not measured here: pass
them (``--run-overhead``, ``--audit``) from a study's run records.

    python bench/costs.py [--write] [--steps 3] [--run-overhead 6] [--audit 25]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from covtl.costs import COSTS_FILE
from covtl.models import build_model
from covtl.ssl import build_ssl

#: (network, attention blocks) the smoke, quick and cpu profiles run, and the sizes they use
NETWORKS = (("resnet18", 0), ("resnet18", 1), ("resnet18", 5), ("resnet34", 0), ("resnet50", 0),
            ("densenet121", 0), ("efficientnet_b0", 0), ("crnet", 0))
SIZES = (32, 64, 128)
CL = torch.channels_last  # fit() trains and evaluates channels-last on every device
SSL = ("moco_v1", "moco_v2", "simclr", "rotation", "a_region_moco")


def _median_time(step, steps: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def supervised(name: str, n_attn: int, size: int, steps: int, batch: int = 32) -> tuple[float, float]:
    torch.manual_seed(0)
    net = build_model(name, num_classes=2, n_attn=n_attn).to(memory_format=CL)  # as fit() runs it
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 3, size, size).contiguous(memory_format=CL), torch.arange(batch) % 2

    def train_step() -> None:
        net.train()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    xe = torch.randn(2 * batch, 3, size, size).contiguous(memory_format=CL)

    def eval_step() -> None:
        net.eval()
        with torch.no_grad():
            net(xe)

    return _median_time(train_step, steps) / batch, _median_time(eval_step, steps) / (2 * batch)


def ssl_step(method: str, size: int, steps: int, batch: int = 32) -> float:
    torch.manual_seed(0)
    extra = {"queue_size": 128} if "moco" in method else {}
    task = build_ssl(method, build_model("resnet18", num_classes=2), **extra).train().to(memory_format=CL)
    opt = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    views = [torch.randn(batch, 3, size, size).contiguous(memory_format=CL) for _ in range(2)]
    if method == "a_region_moco":
        views.append(torch.randn(batch, 5, 3, size, size))
    batch_ = {"image": views}

    def step() -> None:
        opt.zero_grad()
        task(batch_).backward()
        opt.step()

    return _median_time(step, steps) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--write", action="store_true", help=f"store the figures in {COSTS_FILE}")
    parser.add_argument("--run-overhead", type=float, default=4.0, help="seconds per run besides training")
    parser.add_argument("--audit", type=float, default=14.0, help="seconds of the split audit")
    parser.add_argument("--parallel-slowdown", type=float, default=1.2,
                        help="measured run time in a study over the estimate (a run beside another one, "
                             "data loading and augmentation in the same thread)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; seconds per image (ms)\n")
    print(f"{'network':<18}{'ATTN':>5}{'px':>5}{'train ms':>10}{'eval ms':>9}")
    train, evals = {}, {}
    for name, n_attn in NETWORKS:
        for size in SIZES:
            tr, ev = supervised(name, n_attn, size, args.steps)
            key = f"{name}-a{n_attn}-{size}"
            train[key], evals[key] = round(tr, 6), round(ev, 6)
            print(f"{name:<18}{n_attn:>5}{size:>5}{1e3 * tr:>10.2f}{1e3 * ev:>9.2f}", flush=True)
    base = train["resnet18-a0-64"]
    factors = {m: round(ssl_step(m, 64, args.steps) / base, 3) for m in SSL}
    print("\nSSL step / supervised step (ResNet-18, 64 px):",
          ", ".join(f"{m} {f:.2f}x" for m, f in factors.items()))
    if args.write:
        COSTS_FILE.write_text(json.dumps({
            "machine": f"{platform.machine()}, {torch.__version__}, 1 thread per process",
            "measured": time.strftime("%Y-%m-%d"), "train": train, "eval": evals, "ssl_factor": factors,
            "run_overhead_s": args.run_overhead, "audit_s": args.audit, "parallel_slowdown": args.parallel_slowdown,
        }, indent=1) + "\n")
        print(f"wrote {COSTS_FILE}")


if __name__ == "__main__":
    main()
