"""The study: which runs every table needs (the plan, as data) and the cached runner.

A **run** is one execution of a stage notebook (``notebooks/<stage>.py``) with its parameters
and the run whose checkpoint it starts from. A **cell** is one row of one paper table
(``table``, ``model``, ``setting`` exactly as in ``book/data/paper_numbers.csv``) and the runs
(one per seed) whose results fill it. :func:`build_plan` gives both for a profile; identical
runs needed by several tables (e.g. the STL-N network of a chain) are one run.

:func:`run_study` executes the plan with papermill into ``results/<profile>/runs/<run id>/``
(the executed notebook, ``metrics.json``, ``run.json``, checkpoints) and skips a run whose
inputs are unchanged: its key hashes the notebook, the parameters, the upstream run's key, the
data fingerprint and covtl's source. An interrupted run resumes from its last checkpoint; a
failing notebook stops the study with an error naming the run and the cell, and every
finished run stays as it is.

Stand-ins: at the small profiles the papers' networks are replaced by smaller ones
(:attr:`covtl.profiles.Profile.backbones`), and each cell says which network actually ran.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_json_atomic
from .models import PAPER_B_MODELS, build_model, count_parameters, has_imagenet_weights
from .profiles import get_profile
from .provenance import provenance

__all__ = ["Cell", "DryRun", "Plan", "Run", "StudyRunError", "build_plan", "check_run", "dry_run",
           "emit_commands", "parameter_counts", "run_study"]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

ATTN = {"Baseline": 0, "1 ATTN": 1, "5 ATTNs": 5}
B_ORDER = ("VGG-16", "ResNet-18", "ResNet-50", "DenseNet-121", "DenseNet-169", "EfficientNet-b0",
           "EfficientNet-b1", "CRNet")


class StudyRunError(RuntimeError):
    """A run of the study failed; finished runs are kept."""


@dataclass(frozen=True)
class Run:
    """One notebook execution: ``params`` (sorted pairs) and the run it starts from."""

    notebook: str
    params: tuple[tuple[str, Any], ...]
    upstream: Run | None = None
    init: str = ""  # when there is no upstream: "" = random, "imagenet" = torchvision weights

    @property
    def id(self) -> str:
        p = dict(self.params)
        digest = hashlib.sha256(json.dumps(
            [self.notebook, self.params, self.upstream.id if self.upstream else self.init]
        ).encode()).hexdigest()[:8]
        parts = [self.notebook, p.get("backbone", ""), f"a{p['n_attn']}" if "n_attn" in p else "",
                 p.get("method", p.get("recipe", "")), f"s{p['seed']}" if "seed" in p else "", digest]
        return "-".join(x for x in parts if x != "")

    def chain(self) -> list[Run]:
        """This run and its upstream runs, upstream first."""
        return (self.upstream.chain() if self.upstream else []) + [self]


@dataclass
class Cell:
    """One row of a paper table and the runs (one per seed) behind it."""

    table: str
    model: str
    setting: str
    backbone: str
    runs: list[Run]
    description: str = ""


@dataclass
class Plan:
    profile: str
    cells: list[Cell] = field(default_factory=list)
    not_run: list[dict[str, str]] = field(default_factory=list)  # paper rows this profile skips

    @property
    def runs(self) -> list[Run]:
        """Every run once, upstream before downstream."""
        seen: dict[str, Run] = {}
        for cell in self.cells:
            for run in cell.runs:
                for r in run.chain():
                    seen.setdefault(r.id, r)
        return list(seen.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "pretrain_seeds": get_profile(self.profile).pretrain_seeds,
            "cells": [{"table": c.table, "model": c.model, "setting": c.setting, "backbone": c.backbone,
                       "description": c.description, "runs": [r.id for r in c.runs]} for c in self.cells],
            "not_run": self.not_run,
            "runs": {r.id: {"notebook": r.notebook, "params": dict(r.params),
                            "upstream": r.upstream.id if r.upstream else None, "init": r.init}
                     for r in self.runs},
        }


def _run(notebook: str, upstream: Run | None = None, init: str = "", **params: Any) -> Run:
    return Run(notebook, tuple(sorted(params.items())), upstream, init)


def build_plan(profile: str) -> Plan:
    """Every table of STUDY.md "What the book shows", as cells and runs, at ``profile``."""
    prof = get_profile(profile)
    nets, seeds = prof.backbones, range(prof.seeds)
    plan = Plan(profile)
    natural_classes = prof.natural_classes

    def add(table: str, model: str, setting: str, backbone: str, runs: list[Run], description: str = ""):
        if prof.tables is not None and table not in prof.tables:
            skip(table, model, prof.skip_reason)
            return
        plan.cells.append(Cell(table, model, setting, backbone, runs, description))

    def skip(table: str, model: str, why: str):
        row = {"table": table, "model": model, "why": why}
        if row not in plan.not_run:
            plan.not_run.append(row)

    plan.cells.append(Cell("B1", "COVID19-CT", "split statistics", "", [_run("split_audit", seed=0)]))

    # ---------------- paper A: x baseline / 1 ATTN / 5 ATTNs
    for group in ("R-50", "R-101"):
        for variant, n_attn in ATTN.items():
            model = f"{group} {variant}"
            why = (f"{group} is not run at the {profile} profile" if group not in nets
                   else None if variant in prof.attn_variants else prof.skip_reason)
            if why:
                for t in ("A1", "A2", "A3", "A4", "A5", "A6"):
                    skip(t, model, why)
                continue
            bb = nets[group]
            net = {"backbone": bb, "n_attn": n_attn}
            chains = range(prof.pretrain_seeds)  # pretraining chain c serves fine-tune seeds s = c mod chains
            stl_n = [_run("stl_n", seed=c, recipe="a_stl_n", **net) for c in chains]
            stl_nm = [_run("stl_m", stl_n[c], seed=c, recipe="a_stl_m", **net) for c in chains]
            stl_m = [_run("stl_m", seed=c, recipe="a_stl_m", **net) for c in chains]

            def sstl(method: str, recipe: str, stl_nm=stl_nm, net=net, **extra: Any) -> list[Run]:
                return [_run("sstl_m", up, seed=c, method=method, recipe=recipe, dataset="covid-ct", **extra, **net)
                        for c, up in enumerate(stl_nm)]

            ssl = {"ours": sstl("a_region_moco", "a_sstl_m"), "moco": sstl("moco_v1", "a_moco"),
                   "simclr": sstl("simclr", "a_simclr"),
                   # the controlled set: A's chain, optimiser, augmentation, epochs and batch for all
                   # three; only the objective differs (region weight 0 is plain MoCo)
                   "moco (controlled)": sstl("a_region_moco", "a_sstl_m", region_weight=0.0),
                   "simclr (controlled)": sstl("simclr", "a_sstl_m")}

            def ft(ups: list[Run] | None, recipe: str = "a_finetune", net=net) -> list[Run]:
                return [_run("finetune", ups[s % len(ups)] if ups else None, seed=s, recipe=recipe, **net)
                        for s in seeds]

            add("A1", model, "ImageNet val", bb, stl_n, "STL-N validation accuracy")
            ours = ft(ssl["ours"])
            add("A2", model, "w TL", bb, ours, "STL-N -> STL-M -> SSTL-M (ours) -> fine-tune")
            add("A3", model, "w Ours", bb, ours)
            add("A3", model, "w MoCo", bb, ft(ssl["moco"]), "MoCo v1 with its own recipe (the literal set)")
            add("A3", model, "w SimCLR", bb, ft(ssl["simclr"]), "SimCLR with its own recipe (the literal set)")
            if prof.a3_controlled is None or variant in prof.a3_controlled:
                add("A3", model, "w MoCo (controlled)", bb, ft(ssl["moco (controlled)"]),
                    "A's SSTL-M recipe, region weight 0: differs from Ours only in the objective")
                add("A3", model, "w SimCLR (controlled)", bb, ft(ssl["simclr (controlled)"]),
                    "A's SSTL-M recipe with SimCLR's objective")
            else:
                skip("A3", f"{model} (controlled rows)", prof.skip_reason)
            scratch = ft(None)
            add("A4", model, "w/o TL", bb, scratch, "fine-tune from random init")
            add("A4", model, "w TL", bb, ours)
            add("A5", model, "w/o TL", bb, scratch)
            add("A5", model, "w STL-N", bb, ft(stl_n))
            add("A5", model, "w STL-M", bb, ft(stl_m))
            add("A6", model, "w/o TL", bb,
                [_run("transferability", seed=c, source_classes=natural_classes, **net) for c in chains])
            add("A6", model, "w STL-N", bb, [_run("transferability", stl_n[c], seed=c, source_classes=0, **net)
                                             for c in chains])
            add("A6", model, "w STL-N w STL-M", bb,
                [_run("transferability", stl_nm[c], seed=c, source_classes=0, **net) for c in chains])
            if group == "R-50" and n_attn in (0, 5):
                add("A-Fig4", model, "Grad-CAM" if n_attn == 0 else "attention", bb,
                    [_run("explain", ours[0], seed=0, n_figure=4, **net)])

    # ---------------- paper B

    chains = range(prof.pretrain_seeds)

    def source(bb: str, c: int) -> tuple[Run | None, str]:
        """B's ImageNet-pretrained starting point (chain ``c``): torchvision's weights at the paper
        profile where they exist; otherwise (CRNet, and every network at the smaller profiles) an
        STL-N run on the natural images, as B itself trained CRNet on ImageNet."""
        if profile == "paper" and has_imagenet_weights(bb):
            return None, "imagenet"
        return _run("stl_n", seed=c, recipe="a_stl_n", backbone=bb, n_attn=0), ""

    def bft(ups: list[tuple[Run | None, str]] | None, bb: str, recipe: str) -> list[Run]:
        """Fine-tunes of every seed; seed s starts from chain s mod chains (random init: ``ups`` None)."""
        out = []
        for s in seeds:
            up, init = ups[s % len(ups)] if ups else (None, "")
            out.append(_run("finetune", up, init=init if up is None else "", seed=s, recipe=recipe, backbone=bb,
                            n_attn=0))
        return out

    for name in B_ORDER:
        if name not in nets:
            skip("B3", name, f"{name} is not run at the {profile} profile")
            continue
        bb = nets[name]
        ups = [source(bb, c) for c in chains]
        add("B3", name, "Rand.", bb, bft(None, bb, "b_random_init"))
        add("B3", name, "Trans.", bb, bft(ups, bb, "b_transfer"))
    for name in ("ResNet-50", "DenseNet-169"):
        if name not in nets or name not in prof.b_ablation:
            for t in ("B4", "B5", "B6", "B7", "B-Fig5"):
                skip(t, name, f"{name} is not run at the {profile} profile" if name not in nets else prof.skip_reason)
            continue
        bb = nets[name]
        ups = [source(bb, c) for c in chains]

        def moco(starts: list[tuple[Run | None, str]], dataset: str, bb=bb) -> list[tuple[Run, str]]:
            return [(_run("sstl_m", up, init=init if up is None else "", seed=c, method="moco_v2", recipe="b_moco",
                          dataset=dataset, backbone=bb, n_attn=0), "") for c, (up, init) in enumerate(starts)]

        luna = moco(ups, "lung-ct-unlabeled")
        self_trans_ssl = moco(luna, "covid-ct")
        covid_ssl = moco(ups, "covid-ct")
        scratch_ssl = moco([(None, "")] * len(chains), "covid-ct")
        trans = bft(ups, bb, "b_transfer")
        self_trans = bft(self_trans_ssl, bb, "b_transfer")
        method2 = bft(covid_ssl, bb, "b_transfer")
        if name == "DenseNet-169":
            add("B4", name, "Random Initialization", bb, bft(None, bb, "b_random_init"))
            add("B4", name, "Pretrain on ImageNet", bb, trans)
            skip("B4", f"{name} (LNM rows)", "the Lung Nodule Malignancy dataset is not available to covtl")
        add("B5", name, "Trans", bb, trans)
        add("B5", name, "Self-Trans", bb, self_trans)
        add("B6", name, "Method 1", bb, bft(scratch_ssl, bb, "b_transfer"))
        add("B6", name, "Method 2", bb, method2)
        add("B6", name, "Method 3", bb, bft(luna, bb, "b_transfer"))
        add("B6", name, "Method 4", bb, bft(ups, bb, "b_rotation_joint"))
        add("B6", name, "Self-Trans", bb, self_trans)
        add("B7", name, "Frozen", bb, bft(covid_ssl, bb, "b_transfer_frozen"))
        add("B7", name, "Unfrozen", bb, method2, "SSL weights of Method 2, as the paper's numbers suggest")
        for setting, runs in (("Rand.", None), ("Trans.", trans), ("Self-Trans", self_trans)):
            start = runs[0] if runs else bft(None, bb, "b_random_init")[0]
            add("B-Fig5", name, setting, bb, [_run("explain", start, seed=0, n_figure=4, backbone=bb, n_attn=0)])
    return plan


# ---------------------------------------------------------------------------- dry run

#: stages whose run writes a checkpoint (``last.pt``) that a downstream run can start from
TRAINING_STAGES = {"stl_n", "stl_m", "sstl_m", "finetune"}


@dataclass
class DryRun:
    """A plan checked without training: problems per run and the estimated cost."""

    profile: str
    runs: list[Run]
    problems: dict[str, list[str]]  # run id -> what is wrong (empty: every run can start)
    notes: dict[str, list[str]]  # run id -> what the user must provide (e.g. cached ImageNet weights)
    seconds: dict[str, float]  # run id -> estimated seconds on the costs' machine ({} = no estimate)
    wall_s: float | None  # the plan's estimated wall time at ``jobs``
    jobs: int
    machine: str = ""

    @property
    def ok(self) -> bool:
        return not any(self.problems.values())

    def by_stage(self) -> dict[str, tuple[int, float]]:
        out: dict[str, tuple[int, float]] = {}
        for r in self.runs:
            n, t = out.get(r.notebook, (0, 0.0))
            out[r.notebook] = (n + 1, t + self.seconds.get(r.id, 0.0))
        return out


def _notebook_parameters(name: str) -> dict[str, Any]:
    """The parameters cell of ``notebooks/<name>.py``: name -> default value."""
    import ast

    nb = _notebook(name)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"notebooks/{name}.py must have exactly one cell tagged 'parameters'")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = ast.literal_eval(node.value)
    return out


def check_run(run: Run, profile: str, data_root: str | None, params_of=_notebook_parameters) -> tuple[list, list]:
    """(problems, notes) of one run: notebook, parameters, recipe, network, where ``init`` comes from."""
    from .models import ATTN_MODELS, MODEL_NAMES
    from .recipes import get_recipe, scale_recipe
    from .ssl import SSL_METHODS

    problems: list[str] = []
    notes: list[str] = []
    if not (NOTEBOOKS / f"{run.notebook}.py").is_file():
        return [f"notebook notebooks/{run.notebook}.py does not exist"], notes
    declared = params_of(run.notebook)
    p = dict(run.params)
    for k, v in p.items():
        if k not in declared:
            problems.append(f"parameter {k!r} is not in the parameters cell of notebooks/{run.notebook}.py")
        elif type(v) is not type(declared[k]):
            problems.append(f"parameter {k}={v!r} is a {type(v).__name__}, the notebook declares "
                            f"{type(declared[k]).__name__}")
    bb, n_attn = p.get("backbone"), p.get("n_attn", 0)
    if bb is not None and bb not in MODEL_NAMES:
        problems.append(f"unknown backbone {bb!r}")
    if n_attn and bb not in ATTN_MODELS:
        problems.append(f"n_attn={n_attn} on {bb}, which takes no attention blocks")
    if "recipe" in p:
        try:
            scale_recipe(get_recipe(p["recipe"]), profile)
        except ValueError as err:
            problems.append(str(err))
    if "method" in p and p["method"] not in SSL_METHODS:
        problems.append(f"unknown SSL method {p['method']!r}")
    if run.upstream is not None:
        up = dict(run.upstream.params)
        if run.upstream.notebook not in TRAINING_STAGES:
            problems.append(f"starts from {run.upstream.id}, a {run.upstream.notebook} run that writes no checkpoint")
        if (up.get("backbone"), up.get("n_attn", 0)) != (bb, n_attn):
            problems.append(f"starts from {run.upstream.id} ({up.get('backbone')}, n_attn={up.get('n_attn', 0)}), "
                            f"another architecture than {bb}, n_attn={n_attn}")
    elif run.init == "imagenet":
        from .models import has_imagenet_weights

        if not has_imagenet_weights(bb):
            problems.append(f"init 'imagenet' but torchvision publishes no ImageNet weights for {bb}: "
                            "start it from an STL-N run")
        else:
            from .models.weights import torchvision_weights_file

            try:
                torchvision_weights_file(bb, "IMAGENET1K_V1")
            except FileNotFoundError:
                notes.append(f"needs torchvision's ImageNet weights of {bb} in the local torch cache "
                             "(covtl does not download them; `covtl models` and the README say how)")
    elif run.init not in ("",):
        problems.append(f"init {run.init!r} is neither an upstream run, '' nor 'imagenet'")
    return problems, notes


def dry_run(profile: str, data_root: str | None = None, jobs: int = 2, only: list[str] | None = None) -> DryRun:
    """Check every run of the plan without training, and estimate its cost (covtl.costs)."""
    from .costs import data_sizes, load_costs, run_seconds, schedule

    plan = build_plan(profile)
    if only:
        plan.cells = [c for c in plan.cells if c.table in only]
    runs = plan.runs
    cache: dict[str, dict[str, Any]] = {}

    def params_of(name: str) -> dict[str, Any]:
        if name not in cache:
            cache[name] = _notebook_parameters(name)
        return cache[name]

    problems, notes = {}, {}
    for run in runs:
        problems[run.id], notes[run.id] = check_run(run, profile, data_root, params_of)
    seconds: dict[str, float] = {}
    wall = None
    machine = ""
    if profile != "paper":  # the costs are CPU costs; the paper profile is sized in GPU-hours
        costs = load_costs()
        machine = costs.machine
        sizes = data_sizes(data_root, real=get_profile(profile).data == "real")
        seconds = {r.id: run_seconds(r, profile, sizes, costs) for r in runs}
        wall = schedule(runs, seconds, jobs, costs.parallel_slowdown)
    return DryRun(profile, runs, problems, notes, seconds, wall, jobs, machine)


# ---------------------------------------------------------------------------- running


#: what runs inside the stages (covtl's top-level modules and packages): a run's key hashes these
#: files, so changing them re-runs the study; everything else in covtl (the book, plotting, the
#: ledger, the planner, runner and CLI) presents or schedules results and can change freely.
#: tests/test_study.py checks that every covtl module a stage imports is listed here.
ENGINE_MODULES = ("__init__.py", "data", "models", "explain.py", "io.py", "losses.py", "metrics.py", "profiles.py",
          "provenance.py", "recipes.py", "regions.py", "ssl.py", "stages.py", "train.py", "transferability.py")


def _in_engine(path: Path) -> bool:
    return path.relative_to(REPO / "covtl").parts[0] in ENGINE_MODULES


def _source_hash() -> str:
    """Hash of the covtl code that runs inside the stages (:data:`ENGINE_MODULES`)."""
    h = hashlib.sha256()
    for p in sorted((REPO / "covtl").rglob("*.py")):
        if not _in_engine(p):
            continue
        h.update(p.relative_to(REPO).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _notebook(name: str):
    import jupytext

    path = NOTEBOOKS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"stage notebook {path} is missing")
    return jupytext.read(path)


def run_key(run: Run, keys: dict[str, str], data_fp: str, code: str, profile: str) -> str:
    nb = (NOTEBOOKS / f"{run.notebook}.py").read_bytes()
    parts = [profile, run.notebook, hashlib.sha256(nb).hexdigest(), json.dumps(run.params),
             keys[run.upstream.id] if run.upstream else run.init, data_fp, code]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def _execute(run: Run, out: Path, params: dict[str, Any], kernels=None) -> None:
    """Run the notebook with papermill: in ``kernels``' warm kernel (see covtl.kernels) or a fresh one."""
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .kernels import ENGINE, register_engine

    engine: dict[str, Any] = {}
    if kernels is not None:
        register_engine()
        engine = {"engine_name": ENGINE, "km": kernels.get()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{run.notebook}.ipynb"
        nbformat.write(_notebook(run.notebook), src)
        try:
            papermill.execute_notebook(
                str(src), str(out / "notebook.ipynb"), parameters=params, kernel_name="python3",
                progress_bar=False, log_output=False, cwd=str(REPO), **engine,
            )
        except PapermillExecutionError as err:
            raise StudyRunError(
                f"run {run.id} (notebooks/{run.notebook}.py) failed in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}. The executed notebook is {out / 'notebook.ipynb'}; "
                "finished runs are kept -- fix the cause and rerun the same command to continue."
            ) from None


def _finished(run: Run, key: str, out_root: Path) -> bool:
    """A finished run with this key exists (its ``run.json`` says so)."""
    record_path = out_root / "runs" / run.id / "run.json"
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    return record.get("key") == key and record.get("status") == "done"


def checkpoints_to_rebuild(runs: list[Run], keys: dict[str, str], out_root: Path) -> set[str]:
    """Finished runs to run again because a run that will execute needs their missing ``last.pt``.

    Result files are committed without checkpoints (a clone of the recorded study has none), so
    a run that must still execute may find its upstream finished but its checkpoint gone. The
    upstream run is then recomputed: deterministically on a CPU with the same thread count (see
    the book's reproducibility page), and its own upstream in turn if that checkpoint is gone too.
    """
    rebuild: set[str] = set()
    for run in reversed(runs):  # the plan lists upstream runs first: walk downstream first
        executes = run.id in rebuild or not _finished(run, keys[run.id], out_root)
        up = run.upstream
        if executes and up is not None and not (out_root / "runs" / up.id / "last.pt").is_file():
            rebuild.add(up.id)
    return rebuild


def _prepare(run: Run, key: str, out_root: Path, profile: str, data_root: str | None,
             rebuild: bool = False) -> dict[str, Any] | None:
    """The run's notebook parameters, or ``None`` when a finished run with this key exists.

    ``rebuild``: run a finished run again (its checkpoint is needed and gone); its old files are
    moved to ``<id>.before-rebuild/`` until the new run has finished (:func:`_rebuilt`).
    """
    out = out_root / "runs" / run.id
    record_path = out / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record and record.get("key") == key and record.get("status") == "done":
        if not rebuild:
            return None
        backup = out.with_name(f"{run.id}.before-rebuild")
        if backup.exists():
            shutil.rmtree(backup)
        out.rename(backup)
        record = None
    if record and record.get("key") != key and out.exists():
        shutil.rmtree(out)  # inputs changed: start this run afresh
    out.mkdir(parents=True, exist_ok=True)
    params = _run_params(run, out_root, profile, data_root)
    # an interrupted run keeps its folder: the engine resumes from its last checkpoint
    write_json_atomic(record_path, {"id": run.id, "key": key, "status": "running", "notebook": run.notebook,
                                    "params": params})
    return params


def _rebuilt(run: Run, out_root: Path) -> str:
    """After a rebuild: drop the old files, saying whether the test metrics came out the same."""
    out = out_root / "runs" / run.id
    backup = out.with_name(f"{run.id}.before-rebuild")
    if not backup.exists():
        return ""
    old, new = (json.loads(p.read_text()).get("test") if p.is_file() else None
                for p in (backup / "metrics.json", out / "metrics.json"))
    shutil.rmtree(backup)
    if old == new:
        return " (checkpoint rebuilt; the same test metrics as recorded)"
    return (" (checkpoint rebuilt; its test metrics differ from the recorded ones: another thread count, "
            "device or package set -- downstream runs start from the new checkpoint)")


def _run_params(run: Run, out_root: Path, profile: str, data_root: str | None) -> dict[str, Any]:
    """The notebook parameters of ``run`` in the study folder ``out_root``."""
    params = {**dict(run.params), "profile": profile, "data_root": data_root or "",
              "out_dir": str(out_root / "runs" / run.id)}
    if run.upstream is not None:
        params["init"] = str(out_root / "runs" / run.upstream.id / "last.pt")
    elif run.init:
        params["init"] = run.init
    return params


def _select(plan: Plan, only: list[str] | None) -> Plan:
    """The plan cut to the tables in ``only`` (all when empty)."""
    if only:
        unknown = set(only) - {c.table for c in plan.cells}
        if unknown:
            raise ValueError(f"--only: unknown table(s) {sorted(unknown)}; choose from "
                             f"{sorted({c.table for c in plan.cells})}")
        plan.cells = [c for c in plan.cells if c.table in only]
    return plan


def emit_commands(profile: str, results: Path = REPO / "results", data_root: str | None = None,
                  only: list[str] | None = None) -> list[str]:
    """One shell command per run of the plan, upstream runs first, for another scheduler.

    Each line makes the run's folder and executes its notebook with papermill, writing where
    ``covtl study`` would (``results/<profile>/runs/<id>/``); string parameters go with ``-r``
    (raw), the others with ``-p``. Run them from the repository root after
    ``jupytext --to ipynb notebooks/*.py``; a run may start once its upstream run (whose
    ``last.pt`` is its ``init``) has finished. Unlike ``covtl study`` they do not skip
    finished runs nor write ``run.json`` records.
    """
    import shlex

    out_root = Path(results) / profile
    lines = []
    for run in _select(build_plan(profile), only).runs:
        params = _run_params(run, out_root, profile, data_root)
        args = " ".join(f"{'-r' if isinstance(v, str) else '-p'} {k} {shlex.quote(str(v))}"
                        for k, v in params.items())
        out = shlex.quote(params["out_dir"])
        lines.append(f"mkdir -p {out} && papermill notebooks/{run.notebook}.ipynb {out}/notebook.ipynb "
                     f"--cwd . {args}")
    return lines


def default_jobs() -> int:
    """Notebooks run side by side: 2 on a CPU-only machine with 2+ cores, else 1 (one GPU)."""
    import os

    import torch

    return 1 if torch.cuda.is_available() else max(1, min(2, os.cpu_count() or 1))


def run_study(
    profile: str,
    results: Path = REPO / "results",
    data_root: str | None = None,
    only: list[str] | None = None,
    jobs: int | None = None,
    echo=print,
    warm_kernels: bool = True,
) -> Path:
    """Run (or reuse) every run the plan needs; return ``results/<profile>``.

    ``jobs`` notebooks run at once (default :func:`default_jobs`); each gets
    ``OMP_NUM_THREADS = cores // jobs`` so they do not fight over the cores. A run starts once
    its upstream run has finished. On the first failure no new run starts, the running ones
    finish, and :class:`StudyRunError` names the failed run and cell. With ``warm_kernels``
    each worker reuses one kernel across its notebooks (:mod:`covtl.kernels`), which saves the
    kernel start and imports (~5 s) per run without changing results. With ``jobs > 1`` on a
    machine with CUDA devices, worker ``i`` runs on GPU ``i mod n_gpus`` (``CUDA_VISIBLE_DEVICES``
    in its kernel's environment, indexing into an existing ``CUDA_VISIBLE_DEVICES`` list).
    """
    import os
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    from .stages import data_fingerprint, resolve_data_root

    plan = _select(build_plan(profile), only)
    jobs = jobs or default_jobs()
    out_root = Path(results) / profile
    root = resolve_data_root(data_root or "")
    data_fp, code = data_fingerprint(root), _source_hash()
    runs = plan.runs
    keys: dict[str, str] = {}
    for run in runs:  # upstream first, so the upstream key is known
        keys[run.id] = run_key(run, keys, data_fp, code, profile)
    rebuild = checkpoints_to_rebuild(runs, keys, out_root)
    if rebuild:
        echo(f"{len(rebuild)} finished run(s) run again: later runs need their checkpoints, which are gone "
             f"({', '.join(sorted(rebuild))})")
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    start = time.perf_counter()
    counts = {"ran": 0, "skipped": 0}
    done: set[str] = set()
    pending = list(runs)
    failure: BaseException | None = None

    def execute(run: Run, params: dict[str, Any]) -> float:
        t0 = time.perf_counter()
        _execute(run, out_root / "runs" / run.id, params, kernels)
        took = time.perf_counter() - t0
        write_json_atomic(out_root / "runs" / run.id / "run.json", {
            "id": run.id, "key": keys[run.id], "status": "done", "notebook": run.notebook, "params": params,
            "wall_time_s": round(took, 2),
            "provenance": provenance(profile=profile, data=str(root), data_fingerprint=data_fp),
        })
        return took

    from .kernels import WarmKernels, visible_gpus, worker_env

    # several workers on several GPUs: worker i sees only GPU i mod n_gpus (its kernel's env)
    gpus = visible_gpus() if jobs > 1 else []
    kernel_env = None
    if gpus:
        echo(f"{jobs} workers on GPU(s) {','.join(gpus)}: worker i uses GPU i mod {len(gpus)}")

        def kernel_env(worker: int) -> dict[str, str]:
            return {**worker_env(worker, gpus), "COVTL_JOBS": str(jobs)}

    kernels = (WarmKernels(cwd=str(REPO), env=kernel_env, reuse=warm_kernels)
               if warm_kernels or kernel_env is not None else None)
    # exits in reverse order: on Ctrl-C the kernels die first, so the pool does not wait for them
    with ThreadPoolExecutor(max_workers=jobs) as pool, kernels or nullcontext():
        running: dict[Any, Run] = {}
        while pending or running:
            ready = [r for r in pending if r.upstream is None or r.upstream.id in done]
            for run in ready if failure is None else []:
                if len(running) >= jobs:
                    break
                pending.remove(run)
                params = _prepare(run, keys[run.id], out_root, profile, data_root, run.id in rebuild)
                if params is None:
                    counts["skipped"] += 1
                    done.add(run.id)
                    continue
                echo(f"[{len(done) + len(running) + 1}/{len(runs)}] {run.id} ...")
                running[pool.submit(execute, run, params)] = run
            if not running:
                if failure is not None or not pending:
                    break
                if not ready:  # cannot happen for a plan built upstream-first
                    raise RuntimeError(f"runs wait for upstream runs that never ran: {[r.id for r in pending]}")
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                run = running.pop(fut)
                try:
                    took = fut.result()
                except BaseException as err:  # stop scheduling; report after the others finish
                    failure = failure or err
                    continue
                done.add(run.id)
                counts["ran"] += 1
                echo(f"[{len(done)}/{len(runs)}] {run.id} done in {took:.1f} s{_rebuilt(run, out_root)}")
    if failure is not None:
        raise failure
    write_json_atomic(out_root / "plan.json", Plan(profile, plan.cells, plan.not_run).to_json())
    write_json_atomic(out_root / "b-table2" / "parameters.json",
                      {"rows": parameter_counts(), "provenance": provenance(profile=profile)})
    write_json_atomic(out_root / "study.json", {
        "profile": profile, "data_root": str(root), "data_fingerprint": data_fp,
        "synthetic": not data_root, "runs": len(runs), **counts, "jobs": jobs,
        "wall_time_s": round(time.perf_counter() - start, 1),
        "provenance": provenance(profile=profile, data=str(root)),
    })
    from .report import write_study_summary

    write_study_summary(out_root)  # summary.csv: every run's numbers, one row per run x split x metric
    echo(f"study {profile}: {counts['ran']} runs executed, {counts['skipped']} unchanged, "
         f"{time.perf_counter() - start:.0f} s; results in {out_root}")
    return out_root


def parameter_counts(num_classes: int = 1000) -> list[dict]:
    """Paper B's Table II (its eight backbones) and paper A's six networks, 1000 classes."""
    rows = [{"paper": "B", "model": name, "n_attn": 0,
             "parameters": count_parameters(build_model(name, num_classes=num_classes))}
            for name in PAPER_B_MODELS]
    rows += [{"paper": "A", "model": name, "n_attn": n_attn,
              "parameters": count_parameters(build_model(name, num_classes=num_classes, n_attn=n_attn))}
             for name in ("resnet50", "resnet101") for n_attn in (0, 1, 5)]
    return rows


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the command line: covtl study --profile quick")
