"""The ``covtl`` command line.

    covtl models                       list the networks with their parameter counts
    covtl study --profile quick        run the study (what exists of it) into results/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PROFILES = ("smoke", "quick", "cpu", "paper")


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import MODEL_NAMES, build_model, count_parameters

    rows = []
    for name in MODEL_NAMES:
        for n_attn in (0, 1, 5) if name.startswith("resnet") else (0,):
            model = build_model(name, num_classes=args.num_classes, n_attn=n_attn)
            rows.append({"model": name, "n_attn": n_attn, "parameters": count_parameters(model)})
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(f"{'model':<18}{'ATTN':>5}{'parameters':>14}")
        for r in rows:
            print(f"{r['model']:<18}{r['n_attn']:>5}{r['parameters']:>14,}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .study import run_study

    run_study(profile=args.profile, results=Path(args.results), data_root=args.data_root)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covtl", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the networks and their parameter counts")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("study", help="run the study at a profile, writing results/<profile>/")
    p.add_argument("--profile", choices=PROFILES, default="quick", help="scale of the runs")
    p.add_argument("--results", default="results", help="output folder (default results/)")
    p.add_argument("--data-root", default=None, help="real data root (default: embedded data)")
    p.set_defaults(func=_cmd_study)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
