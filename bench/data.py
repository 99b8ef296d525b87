"""Data-loading throughput: decoding files every epoch vs the decoded-image cache.

For each image size, one epoch over the real COVID19-CT images (all 746 of
``Images-processed/*/*``) through the ``b_supervised`` training transform, in images/s:

- files:  ``transform(load_image(path))`` per image, single process (decode + resize + augment)
- cache:  ``transform(cache[i])`` from a :class:`covtl.data.cache.DecodedCache` (augment only)
- loader: the same two through a torch DataLoader with 2 worker processes (batch 32; includes
  worker start-up, as a real epoch does)

and the one-off cache build time with 1 and 2 decoding processes. Then the last step of every
transform alone, per image of each size: torchvision's ``ToImage`` + ``ToDtype`` + ``Normalize``
against :class:`covtl.data.transforms.ToNormalizedTensor` (the same values, one call). Prints
tables; asserts nothing (the numbers depend on the machine and its load).

The in-process epochs run with ``--threads`` torch threads (default 1, what DataLoader
workers use): per-image tensor ops of 3 x 128 x 128 cross torch's parallel grain size, and on
a busy 2-core machine two OpenMP threads per tiny op made the 128 px transform ~15x slower.

    python bench/data.py                                  # ../shared/data/covid-ct, 64 and 128 px
    python bench/data.py --root /data/covid-ct --sizes 64 128 224 --no-loader
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from covtl.data.cache import DecodedCache
from covtl.data.images import load_image
from covtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ToNormalizedTensor, build_transform, cache_spec

STAGE = "b_supervised"
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_ROOT = Path(os.environ.get("COVTL_SHARED_DATA", _SHARED))


class _Images(Dataset):
    """Transformed images from files (``source`` = list of paths) or from a DecodedCache."""

    def __init__(self, source, transform) -> None:
        self.source, self.transform = source, transform

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.source[i]
        return self.transform(load_image(image) if isinstance(image, str) else image)


def _epoch(dataset: _Images) -> float:
    """Images/s of one pass over ``dataset`` in this process."""
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return len(dataset) / (time.perf_counter() - start)


def _loader_epoch(dataset: _Images, workers: int, batch: int) -> float:
    """Images/s of one DataLoader epoch (worker start-up included)."""
    start = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers):
        pass
    return len(dataset) / (time.perf_counter() - start)


def _build_seconds(paths: list[str], size: int, method: str, workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        DecodedCache.build(paths, size, folder, resize=method, workers=workers)
        return time.perf_counter() - start


def bench_size(paths: list[str], size: int, cache_dir: Path, loader: bool, batch: int) -> dict:
    torch.manual_seed(0)
    transform = build_transform(STAGE, size, train=True)
    cache_size, method = cache_spec(STAGE, size, train=True)
    row = {"size": size, "cache_px": cache_size,
           "build_1": _build_seconds(paths, cache_size, method, 1),
           "build_2": _build_seconds(paths, cache_size, method, 2)}
    cache = DecodedCache.build(paths, cache_size, cache_dir, resize=method)
    files, cached = _Images(paths, transform), _Images(cache, transform)
    row["files"], row["cache"] = _epoch(files), _epoch(cached)
    if loader:
        row["loader_files"] = _loader_epoch(files, 2, batch)
        row["loader_cache"] = _loader_epoch(cached, 2, batch)
    return row


def to_tensor_ms(size: int, repeats: int = 500) -> tuple[float, float]:
    """Milliseconds per ``size`` px RGB image: torchvision's three to-tensor steps, ToNormalizedTensor."""
    from PIL import Image
    from torchvision.transforms import v2

    image = Image.fromarray(torch.randint(0, 256, (size, size, 3), dtype=torch.uint8).numpy())
    three = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    out = []
    for step in (three, ToNormalizedTensor()):
        step(image)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            step(image)
        out.append(1000 * (time.perf_counter() - start) / repeats)
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT / "covid-ct",
                        help="COVID19-CT folder holding Images-processed/ (default ../shared/data/covid-ct)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch", type=int, default=32, help="DataLoader batch size (default 32)")
    parser.add_argument("--no-loader", dest="loader", action="store_false", help="skip the DataLoader runs")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    paths = sorted(str(p) for p in args.root.glob("Images-processed/*/*") if p.is_file())
    if not paths:
        print(f"no images under {args.root}/Images-processed/*/*; skipping (give --root)")
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(paths)} images from {args.root}; stage {STAGE}; {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, load average {load:.1f}\n")
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        rows = [bench_size(paths, size, cache_dir, args.loader, args.batch) for size in args.sizes]
    header = f"{'px':>4}{'cache px':>9}{'build 1p s':>11}{'build 2p s':>11}"
    header += f"{'files img/s':>12}{'cache img/s':>12}{'speedup':>8}"
    header += f"{'DL2 files':>10}{'DL2 cache':>10}" if args.loader else ""
    print(header)
    for r in rows:
        line = (f"{r['size']:>4}{r['cache_px']:>9}{r['build_1']:>11.1f}{r['build_2']:>11.1f}"
                f"{r['files']:>12.0f}{r['cache']:>12.0f}{r['cache'] / r['files']:>7.1f}x")
        if args.loader:
            line += f"{r['loader_files']:>10.0f}{r['loader_cache']:>10.0f}"
        print(line)
    print(f"\n{'px':>4}{'to-tensor ms: torchvision':>27}{'ToNormalizedTensor':>20}")
    for size in args.sizes:
        tv, ours = to_tensor_ms(size)
        print(f"{size:>4}{tv:>27.3f}{ours:>20.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
