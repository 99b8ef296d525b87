"""Would training several seeds as one batched computation be cheaper on this CPU?

``torch.func.stack_module_state`` + ``vmap`` turns a convolution whose weights differ per seed
into one grouped convolution (``groups`` = seeds) over the seeds' channels stacked. Each seed's
arithmetic stays its own, so this pays only if a grouped convolution costs less than one
convolution per seed. For the 3x3 convolutions of ResNet-18's body (batch 16, channels-last, one
thread, forward and backward) at an input of ``--size`` px, this times two seeds both ways and
prints grouped / separate, per stage and weighted by the blocks' counts: above 1, batching seeds
costs more than running them one after the other.

    python bench/batched_seeds.py [--size 128] [--seeds 2]

Asserts nothing: this is a measurement.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

#: ResNet-18's 3x3 body convolutions: (channels, side as a fraction of the input, convolutions)
BODY = ((64, 1 / 4, 4), (128, 1 / 8, 4), (256, 1 / 16, 4), (512, 1 / 32, 4))


def best_time(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cl, k = torch.channels_last, args.seeds
    total_sep = total_grouped = 0.0
    for c, frac, count in BODY:
        hw = max(1, round(args.size * frac))
        x = torch.randn(args.batch, c, hw, hw).contiguous(memory_format=cl).requires_grad_()
        w = torch.randn(c, c, 3, 3).contiguous(memory_format=cl).requires_grad_()
        xk = torch.randn(args.batch, k * c, hw, hw).contiguous(memory_format=cl).requires_grad_()
        wk = torch.randn(k * c, c, 3, 3).contiguous(memory_format=cl).requires_grad_()

        def separate(x=x, w=w):
            for _ in range(k):
                F.conv2d(x, w, padding=1).sum().backward()

        def grouped(x=xk, w=wk):
            F.conv2d(x, w, padding=1, groups=k).sum().backward()

        t_sep, t_grouped = best_time(separate), best_time(grouped)
        total_sep += count * t_sep
        total_grouped += count * t_grouped
        print(f"{c:4d} channels, {hw:3d} px: {k} convolutions {1e3 * t_sep:7.1f} ms, one grouped "
              f"{1e3 * t_grouped:7.1f} ms, ratio {t_grouped / t_sep:.2f}", flush=True)
    print(f"ResNet-18 body at {args.size} px, batch {args.batch}, {k} seeds, forward + backward, 1 thread: "
          f"grouped / separate = {total_grouped / total_sep:.2f}")


if __name__ == "__main__":
    main()
