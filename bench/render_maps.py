"""Keep the explanation figures of a study as pictures, for committing in place of ``maps.pt``.

    python bench/render_maps.py /work/study-run/results/cpu results/cpu

Draws A-Fig4 and B-Fig5 from the explain runs' ``maps.pt`` in the first folder (the study's own)
into ``<second folder>/figures/<table>-maps.png`` with a record of the runs they show
(:func:`covtl.book.write_maps_figure`); a figure whose explain runs have not all finished is
skipped. Prints what it wrote and each picture's size (a committed figure stays under 1 MB).
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")

from covtl.book import complete_results  # noqa: E402
from covtl.book.maps import write_maps_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="the study's results folder (holds runs/*/maps.pt)")
    ap.add_argument("dest", help="the results folder to commit")
    args = ap.parse_args()
    res = complete_results(args.src)
    if res is None:
        raise SystemExit(f"no study results in {args.src} (no plan.json)")
    for table in ("A-Fig4", "B-Fig5"):
        path = write_maps_figure(res, table, args.dest)
        if path is None:
            print(f"{table}: explain runs not all finished; nothing drawn")
            continue
        size = path.stat().st_size
        print(f"{table}: wrote {path} ({size / 1e3:.0f} kB){'  -- over 1 MB: do not commit' if size > 1e6 else ''}")


if __name__ == "__main__":
    main()
