"""Fine-tuning throughput of ResNet-50 with 0/1/5 attention blocks, and whether data keeps up.

Prints (asserts nothing):
1. training images/s of a full step (forward, backward, SGD) at 128 px and the achieved
   FLOP/s as a fraction of this machine's dense matmul FLOP/s measured in the same run, with
   the default memory format and with channels-last, and at 1 and 2 torch threads;
2. loader images/s of COVID19-CT through the fine-tune transform (decoded files vs the
   decoded-image cache; DataLoader with 0/1/2 workers), to compare with (1).

    python bench/train.py [--root ../shared/data/covid-ct] [--size 128] [--batch 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from models import bench_one, matmul_flops
from torch.utils.data import DataLoader

from covtl.data import datasets as ds
from covtl.data.cache import DecodedCache
from covtl.data.transforms import build_transform, cache_spec


def loader_rate(dataset, workers: int, batch: int, limit: int = 256) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=True)
    n, t0 = 0, time.perf_counter()
    for b in loader:
        n += len(b["label"])
        if n >= limit:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/data/covid-ct"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    peak = matmul_flops()
    print(f"dense matmul: {peak / 1e9:.1f} GFLOP/s; torch {torch.__version__}\n")
    print(f"{'network':<22}{'threads':>8}{'format':>15}{'img/s':>8}{'of mm':>7}")
    for threads in (2, 1):
        torch.set_num_threads(threads)
        peak_t = matmul_flops()
        for n_attn in (0, 1, 5):
            for channels_last in (False, True):
                r = bench_one("resnet50", n_attn, args.size, args.batch, args.steps, "cpu",
                              channels_last=channels_last)
                fmt = "channels-last" if channels_last else "contiguous"
                print(f"{'resnet50 + ' + str(n_attn) + ' ATTN':<22}{threads:>8}{fmt:>15}"
                      f"{r['img_s']:>8.1f}{r['flop_s'] / peak_t:>7.0%}", flush=True)
    torch.set_num_threads(2)

    root = Path(args.root)
    if not root.is_dir():
        print(f"\nno COVID19-CT at {root}: loader part skipped (give --root)")
        return
    tf = build_transform("a_finetune", args.size, train=True)
    data = ds.load_dataset("covid-ct", root, "train", tf)
    print(f"\nloader, {len(data)} COVID19-CT training images, a_finetune transform at {args.size} px")
    for workers in (0, 1, 2):
        print(f"  decode files, {workers} workers: {loader_rate(data, workers, args.batch):7.1f} img/s", flush=True)
    size, method = cache_spec("a_finetune", args.size, train=True)
    t0 = time.perf_counter()
    cache = DecodedCache.build(list(data.records.path), size, resize=method)
    print(f"  cache build/open: {time.perf_counter() - t0:.1f} s")
    data.use_cache(cache)
    for workers in (0, 1, 2):
        print(f"  from the cache,  {workers} workers: {loader_rate(data, workers, args.batch):7.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
