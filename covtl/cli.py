"""The ``covtl`` command line.

    covtl models                           list the networks with their parameter counts
    covtl data synth --out DIR             write the embedded synthetic data root
    covtl data fetch covid19-ct --root DIR   download a public dataset (online machines)
    covtl study --profile quick            run the study into results/<profile>/
    covtl book --yours quick               build the Jupyter Book: the recorded real-data study
                                           (results/cpu) first, your quick run in "Your run"

``-v`` shows debug messages and the traceback of an error, ``-q`` only warnings and errors.
An error (a failed run, a bad ``--only``, a missing data root) prints one message and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from .profiles import PROFILE_NAMES

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("covtl")


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


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data import synth

    manifest = synth.generate(args.out, seed=args.seed, scale=args.scale, overwrite=args.overwrite)
    print(f"wrote the synthetic data root {args.out} in {manifest['seconds']['total']:.1f} s")
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .data import fetch

    return fetch.fetch_main(args.names, Path(args.root))


def _cmd_dry_run(args: argparse.Namespace) -> int:
    from .study import dry_run

    report = dry_run(args.profile, args.data_root, jobs=args.jobs or 2, only=args.only)
    est = bool(report.seconds)
    print(f"{'run':<58}{'init from':<44}" + ("est. s" if est else ""))
    for run in report.runs:
        start = run.upstream.id if run.upstream else (run.init or "random init")
        print(f"{run.id:<58}{start:<44}" + (f"{report.seconds[run.id]:>6.0f}" if est else ""))
        for problem in report.problems[run.id]:
            print(f"    PROBLEM: {problem}")
        for note in report.notes[run.id]:
            print(f"    note: {note}")
    print()
    print(f"{'stage':<18}{'runs':>6}" + (f"{'est. CPU h':>12}" if est else ""))
    for stage, (n, t) in report.by_stage().items():
        print(f"{stage:<18}{n:>6}" + (f"{t / 3600:>12.2f}" if est else ""))
    n_bad = sum(bool(p) for p in report.problems.values())
    print(f"\n{len(report.runs)} runs at the {args.profile} profile; "
          + (f"{n_bad} with problems" if n_bad else "every run can start"))
    if est:
        print(f"estimated wall time: {report.wall_s / 3600:.2f} h with {report.jobs} jobs "
              f"({sum(report.seconds.values()) / 3600:.2f} h of single-thread work; per-image costs measured "
              f"on {report.machine}, covtl/costs.json)")
    else:
        print("no time estimate: the paper profile is sized in GPU-hours (see the book's compute chapter)")
    return 1 if n_bad else 0


def _cmd_study(args: argparse.Namespace) -> int:
    from .study import SlurmOptions, run_study

    if args.dry_run:
        return _cmd_dry_run(args)
    if args.emit_commands:
        from .study import emit_commands

        for line in emit_commands(args.profile, Path(args.results), args.data_root, args.only):
            print(line)
        return 0
    slurm = SlurmOptions(partition=args.slurm_partition, time_min=args.slurm_time, gpus=args.slurm_gpus,
                         cpus=args.slurm_cpus, mem_gb=args.slurm_mem_gb, account=args.slurm_account)
    if args.log_output:  # the notebooks' own output, streamed by papermill's logger
        logging.getLogger("papermill").setLevel(logging.INFO)
    run_study(profile=args.profile, results=Path(args.results), data_root=args.data_root, only=args.only,
              jobs=args.jobs, warm_kernels=not args.fresh_kernels, executor=args.executor, slurm=slurm,
              log_output=args.log_output)
    return 0


#: the recorded real-data study, committed with covtl: the book's headline when present
HEADLINE_PROFILE = "cpu"


def book_profile(results: Path, profile: str | None) -> str:
    """The profile whose results are the book's headline: ``profile`` if given, else the recorded
    study (``cpu``) when ``results`` holds it, else ``quick``."""
    if profile:
        return profile
    return HEADLINE_PROFILE if (results / HEADLINE_PROFILE / "plan.json").is_file() else "quick"


def _cmd_book(args: argparse.Namespace) -> int:
    root = Path(args.results)
    profile = book_profile(root, args.profile)
    results = root / profile
    if not (results / "plan.json").is_file():
        raise SystemExit(f"no study results in {results}: run `covtl study --profile {profile}` first")
    env = {**os.environ, "COVTL_RESULTS": str(results.resolve())}
    env.pop("COVTL_YOURS", None)
    if args.yours:
        yours = root / args.yours
        if not (yours / "plan.json").is_file():
            raise SystemExit(f"no study results in {yours} for --yours: run `covtl study --profile {args.yours}` "
                             "first, or leave --yours out")
        env["COVTL_YOURS"] = str(yours.resolve())
    log.info("book: headline results %s%s", results, f", your run {env['COVTL_YOURS']}" if args.yours else "")
    # jupyter-book v1 has no `python -m jupyter_book`; run its CLI with this interpreter
    out = Path(args.out).resolve() if args.out else REPO
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
           "build", str(REPO), "--all", "-W", "-n", "--keep-going"]  # --all: results change, sources don't
    if args.out:
        cmd += ["--path-output", str(out)]
    print(" ".join(cmd))
    done = subprocess.run(cmd, env=env, cwd=REPO)
    if done.returncode == 0:
        print(f"book: {out / '_build' / 'html' / 'index.html'}")
    return done.returncode


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covtl", description=__doc__.split("\n")[0])
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug messages, and tracebacks of errors")
    loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the networks and their parameter counts")
    p.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)

    data = sub.add_parser("data", help="datasets: the synthetic default, downloads").add_subparsers(
        dest="data_command", required=True)
    p = data.add_parser("synth", help="write the embedded synthetic data root (all five layouts)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument("--scale", default="default", choices=("default", "tiny"), help="dataset sizes")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(func=_cmd_synth)
    p = data.add_parser("fetch", help="download a public dataset in its published layout")
    p.add_argument("names", nargs="+", help="dataset names (e.g. covid19-ct, tiny-imagenet-200) or all")
    p.add_argument("--root", required=True, help="data root to put it in")
    p.set_defaults(func=_cmd_fetch)

    p = sub.add_parser("study", help="run the study at a profile, writing results/<profile>/")
    p.add_argument("--profile", choices=PROFILE_NAMES, default="quick", help="scale of the runs")
    p.add_argument("--results", default=str(REPO / "results"), help="output folder (default results/)")
    p.add_argument("--data-root", default=None,
                   help="real data root laid out like ../shared/data (default: the embedded synthetic data)")
    p.add_argument("--only", nargs="+", default=None, metavar="TABLE",
                   help="run only what these tables need, e.g. --only A2 B3")
    p.add_argument("--jobs", type=int, default=None,
                   help="notebooks run at once (default: 2 on a CPU machine, 1 with a GPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="check every run of the plan (notebook, parameters, where each init comes from) "
                        "and estimate its time, without training")
    p.add_argument("--emit-commands", action="store_true",
                   help="print the papermill command of every run, upstream runs first, one per line, for "
                        "another scheduler (run them from the repository root after "
                        "`jupytext --to ipynb notebooks/*.py`), without running anything")
    p.add_argument("--fresh-kernels", action="store_true",
                   help="start a new kernel for every notebook (default: each worker reuses one, cleared "
                        "between notebooks; see covtl.kernels)")
    p.add_argument("--log-output", action="store_true",
                   help="stream each run's output (a line per epoch) while it runs; clearest with --jobs 1")
    p.add_argument("--executor", choices=("pool", "local", "slurm"), default="pool",
                   help="where runs execute: pool = workers on this machine (default); local = one process "
                        "per run through submitit; slurm = one SLURM job per run through submitit, upstream "
                        "runs first with job dependencies (needs pip install 'covtl[cluster]')")
    g = p.add_argument_group("SLURM jobs (--executor slurm)")
    g.add_argument("--slurm-partition", default=None, help="partition to submit to (default: the cluster's)")
    g.add_argument("--slurm-account", default=None, help="account to charge (default: yours)")
    g.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MIN", help="time limit per run (1440)")
    g.add_argument("--slurm-gpus", type=int, default=1, help="GPUs per run (default 1)")
    g.add_argument("--slurm-cpus", type=int, default=8, help="CPU cores per run, for data loading (default 8)")
    g.add_argument("--slurm-mem-gb", type=int, default=32, help="memory per run in GB (default 32)")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("book", help="build the Jupyter Book: the recorded real-data study, and your own run apart")
    p.add_argument("--profile", choices=PROFILE_NAMES, default=None,
                   help="whose results every page shows (default: the recorded study, cpu, when the results "
                        "folder holds it, else quick)")
    p.add_argument("--yours", choices=PROFILE_NAMES, default=None, metavar="PROFILE",
                   help="also show your own run at this profile, in the chapter 'Your run' only (make study: "
                        "the profile it ran)")
    p.add_argument("--results", default=str(REPO / "results"), help="results folder (default results/)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="build into DIR/_build/html (default: the repository's _build/html)")
    p.set_defaults(func=_cmd_book)

    from .teaching import register as register_teaching  # covtl teach ...: the class helpers

    register_teaching(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error prints one line (the traceback too with ``-v``) and gives exit status 1."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    covtl_log = logging.getLogger("covtl")
    covtl_log.handlers[:] = [handler]
    covtl_log.setLevel(level)
    covtl_log.propagate = False
    papermill_log = logging.getLogger("papermill")
    papermill_log.handlers[:] = [handler]
    papermill_log.propagate = False
    if not getattr(args, "log_output", False):
        papermill_log.setLevel(logging.WARNING)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("covtl: interrupted; finished runs are kept", file=sys.stderr)
        return 130
    except Exception as err:  # one clear line; the traceback only when asked for
        if args.verbose:
            raise
        print(f"covtl: error: {err}", file=sys.stderr)
        print("(run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
