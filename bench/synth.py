"""Wall time of the embedded synthetic dataset, per part and in total.

Generates the data root of :func:`covtl.data.synth.generate` into a temporary folder (or
``--out``), prints the wall seconds per part, the total, the CPU seconds of all processes (a
load-independent figure when other jobs share the machine), the number of files and their
size, and removes the folder unless ``--out`` was given. Asserts nothing (machines are noisy); the budget
is one minute for the default scale on 2 CPU cores.

    python bench/synth.py                          # default scale, up to 2 workers
    python bench/synth.py --scale tiny --workers 1
    python bench/synth.py --out /tmp/synth-data    # keep the result
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from covtl.data.synth import PARTS, SCALES, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=tuple(SCALES), default="default", help="counts (default: default)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to generate")
    parser.add_argument("--out", default=None, help="keep the data here (replaced if it exists)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="covtl-synth-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "data"
        start_cpu = time.process_time()
        manifest = generate(out, seed=args.seed, scale=args.scale, parts=args.parts, workers=args.workers,
                            overwrite=bool(args.out))
        files = [p for p in out.rglob("*") if p.is_file()]
        size_mb = sum(p.stat().st_size for p in files) / 2**20
        seconds = manifest["seconds"]
        print(f"scale {args.scale}, seed {args.seed}, workers {args.workers or min(2, os.cpu_count() or 1)}, "
              f"{os.cpu_count()} CPUs")
        print(f"{'part':<20}{'seconds':>9}")
        for part in manifest["parts"]:
            print(f"{part:<20}{seconds[part]:>9.2f}")
        print(f"{'total':<20}{seconds['total']:>9.2f}")
        workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = time.process_time() - start_cpu + workers_cpu.ru_utime + workers_cpu.ru_stime
        print(f"{len(files)} files, {size_mb:.1f} MiB; CPU time of all processes {cpu:.1f} s "
              f"(wall time on idle cores ~ CPU / workers)")
        if args.out:
            print(f"kept in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
