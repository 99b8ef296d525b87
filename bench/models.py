"""Training throughput of every backbone, and how much of the machine it uses.

For each network and image size: images/s of a full training step (forward, backward, SGD
update) and the achieved FLOP/s (FLOPs of that step counted by torch's FlopCounterMode,
divided by its time) as a fraction of this machine's dense matrix-multiply FLOP/s, measured
in the same run. Prints a table; asserts nothing (machines are noisy).

    python bench/models.py                       # all networks at 64, 128, 224 px
    python bench/models.py --models resnet50 --attn 0 5 --sizes 128 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from covtl.models import MODEL_NAMES, build_model


def matmul_flops(n: int = 2048, repeats: int = 10, device: str = "cpu") -> float:
    """Best-of-``repeats`` FLOP/s of an n x n float32 matrix multiply."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def bench_one(name: str, n_attn: int, size: int, batch: int, steps: int, device: str,
              channels_last: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model(name, num_classes=2, n_attn=n_attn).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        train_step(model, opt, x, y)  # also the warm-up
    flops = counter.get_total_flops()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        train_step(model, opt, x, y)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    return {"model": name, "attn": n_attn, "size": size, "batch": batch,
            "img_s": batch / t, "gflop_step": flops / 1e9, "flop_s": flops / t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--attn", nargs="+", type=int, default=[0, 1, 5],
                        help="attention counts for the ResNets (others run with 0)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 224])
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    peak = matmul_flops(device=args.device)
    print(f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"dense matmul (2048^2 float32): {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'model':<16}{'ATTN':>5}{'px':>5}{'img/s':>9}{'GFLOP/step':>12}{'GFLOP/s':>9}{'of mm':>7}")
    for name in args.models:
        for n_attn in args.attn if name.startswith("resnet") else [0]:
            for size in args.sizes:
                r = bench_one(name, n_attn, size, args.batch, args.steps, args.device)
                print(f"{r['model']:<16}{r['attn']:>5}{r['size']:>5}{r['img_s']:>9.1f}"
                      f"{r['gflop_step']:>12.2f}{r['flop_s'] / 1e9:>9.1f}{r['flop_s'] / peak:>7.0%}",
                      flush=True)
    print(f"\ndense matmul again: {matmul_flops(device=args.device) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
