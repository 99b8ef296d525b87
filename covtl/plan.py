"""The study plan: which runs every table needs, as data, and its dry run.

A **run** is one execution of a stage notebook (``notebooks/<stage>.py``) with its parameters
and the run whose checkpoint it starts from. A **cell** is one row of one paper table
(``table``, ``model``, ``setting`` exactly as in ``book/data/paper_numbers.csv``) and the runs
(one per seed) whose results fill it. :func:`build_plan` gives both for a profile; identical
runs needed by several tables (e.g. the STL-N network of a chain) are one run.
:func:`dry_run` checks every run of a plan without training and estimates its cost. The runs are
executed by :mod:`covtl.runner`.

Stand-ins: at the small profiles the papers' networks are replaced by smaller ones
(:attr:`covtl.profiles.Profile.backbones`), and each cell says which network actually ran.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import PAPER_B_MODELS, build_model, count_parameters, has_imagenet_weights
from .profiles import get_profile

__all__ = ["ATTN", "B_ORDER", "NOTEBOOKS", "REPO", "TRAINING_STAGES", "Cell", "DryRun", "Plan", "Run",
           "build_plan", "check_run", "dry_run", "parameter_counts", "select"]

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

ATTN = {"Baseline": 0, "1 ATTN": 1, "5 ATTNs": 5}
B_ORDER = ("VGG-16", "ResNet-18", "ResNet-50", "DenseNet-121", "DenseNet-169", "EfficientNet-b0",
           "EfficientNet-b1", "CRNet")


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

    runs = select(build_plan(profile), only).runs
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


def _notebook(name: str):
    import jupytext

    path = NOTEBOOKS / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"stage notebook {path} is missing")
    return jupytext.read(path)


def select(plan: Plan, only: list[str] | None) -> Plan:
    """The plan cut to the tables in ``only`` (all when empty)."""
    if only:
        unknown = set(only) - {c.table for c in plan.cells}
        if unknown:
            raise ValueError(f"--only: unknown table(s) {sorted(unknown)}; choose from "
                             f"{sorted({c.table for c in plan.cells})}")
        plan.cells = [c for c in plan.cells if c.table in only]
    return plan



def parameter_counts(num_classes: int = 1000) -> list[dict]:
    """Paper B's Table II (its eight backbones) and paper A's six networks, 1000 classes."""
    rows = [{"paper": "B", "model": name, "n_attn": 0,
             "parameters": count_parameters(build_model(name, num_classes=num_classes))}
            for name in PAPER_B_MODELS]
    rows += [{"paper": "A", "model": name, "n_attn": n_attn,
              "parameters": count_parameters(build_model(name, num_classes=num_classes, n_attn=n_attn))}
             for name in ("resnet50", "resnet101") for n_attn in (0, 1, 5)]
    return rows
