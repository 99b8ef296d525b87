"""What the optimizer's update costs inside a training step: torch's per-tensor loop, foreach, fused.

For each backbone and image size it trains one network (channels-last, batch ``--batch``, as
:func:`covtl.train.fit` runs) and interleaves the step's three implementations of the update,
step after step, so that all three see the same machine. Per implementation it prints the
median time of the whole step (forward, backward, update) and of the update alone, for Adam (B's
fine-tunes) and SGD with momentum (the pretraining stages). :func:`covtl.train.build_optimizer`
uses the fused kernel where torch has one. Asserts nothing: this is a measurement.

    python bench/optimizer.py [--backbones resnet18 resnet50] [--sizes 64 128] [--batch 16]
        [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from covtl.models import build_model

IMPLEMENTATIONS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
OPTIMIZERS = {
    "adam": (torch.optim.Adam, {"lr": 1e-5, "weight_decay": 1e-4}),
    "sgd": (torch.optim.SGD, {"lr": 1e-5, "momentum": 0.9, "weight_decay": 1e-4}),
}


def measure(backbone: str, size: int, optimizer: str, batch: int, steps: int) -> dict[str, dict[str, float]]:
    """Median seconds of the step and of the update per implementation (interleaved)."""
    torch.manual_seed(0)
    model = build_model(backbone, num_classes=2).train().to(memory_format=torch.channels_last)
    cls, kw = OPTIMIZERS[optimizer]
    opts = {name: cls(model.parameters(), **impl, **kw) for name, impl in IMPLEMENTATIONS.items()}
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    times: dict[str, dict[str, list[float]]] = {name: {"step": [], "update": []} for name in opts}
    for i in range(steps + 1):  # the first round warms up
        for name, opt in opts.items():
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            mid = time.perf_counter()
            opt.step()
            end = time.perf_counter()
            if i:
                times[name]["step"].append(end - start)
                times[name]["update"].append(end - mid)
    return {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--optimizers", nargs="+", choices=sorted(OPTIMIZERS), default=["adam", "sgd"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the study runs 1 per job)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch}, median of {args.steps} steps")
    heads = "  ".join(f"{n + ' step/update':>22}" for n in IMPLEMENTATIONS)
    print(f"{'backbone':<10} {'px':>4} {'optimizer':<5} {heads}  fused saves")
    for backbone in args.backbones:
        for size in args.sizes:
            for optimizer in args.optimizers:
                try:
                    r = measure(backbone, size, optimizer, args.batch, args.steps)
                except RuntimeError as err:  # e.g. no fused kernel for this device in this torch
                    print(f"{backbone:<10} {size:>4} {optimizer:<5} skipped: {err}")
                    continue
                cells = "  ".join(f"{r[n]['step']:>11.3f}s/{1000 * r[n]['update']:>7.1f}ms" for n in IMPLEMENTATIONS)
                saves = 1 - r["fused"]["step"] / r["loop"]["step"]
                print(f"{backbone:<10} {size:>4} {optimizer:<5} {cells}  {saves:>10.1%}", flush=True)


if __name__ == "__main__":
    main()
