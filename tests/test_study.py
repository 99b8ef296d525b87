"""The study plan, the stage notebooks' parameters, and the runner's caching and errors."""

from __future__ import annotations

import ast
import json

import jupytext
import pytest

from covtl.book.claims import CONTROLLED
from covtl.paper import load_paper_numbers
from covtl.profiles import PROFILES
from covtl.study import NOTEBOOKS, build_plan

COMMON = {"profile", "data_root", "seed", "out_dir"}
NETWORK = {"backbone", "n_attn", "init", "device", "threads"}  # notebooks that compute with a network
TRAINING = {"stl_n", "stl_m", "sstl_m", "finetune"}  # notebooks that train: num_workers is theirs too


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.stem)
def test_notebooks_are_thin_and_document_typed_parameters(path):
    from papermill.translators import PythonTranslator

    nb = jupytext.read(path)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one parameters cell"
    parsed = PythonTranslator.inspect(params[0])
    names = {p.name for p in parsed}
    assert COMMON <= names
    if path.stem != "split_audit":
        assert NETWORK <= names
    # no parameter is ignored: each is used by the notebook's code
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not params[0])
    used = {n.id for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Name)}
    assert names <= used, f"parameters the notebook ignores: {sorted(names - used)}"
    if path.stem in TRAINING:
        assert "num_workers" in names
        assert next(p for p in parsed if p.name == "num_workers").default == "-1"  # auto
    for p in parsed:
        assert p.inferred_type_name in ("str", "int", "float", "bool"), p
        assert p.help, f"{p.name} has no help comment"
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]


@pytest.mark.parametrize("profile", list(PROFILES))
def test_plan_covers_every_paper_table(profile):
    plan = build_plan(profile)
    paper = load_paper_numbers()
    planned = {c.table for c in plan.cells} | {n["table"] for n in plan.not_run}
    assert set(paper.table) <= planned | {"B2"}  # B2 (parameter counts) needs no run
    # every planned cell names a row the paper has (so the book can put them side by side)
    keys = set(zip(paper.table, paper.model, paper.setting, strict=True))
    for cell in plan.cells:
        if cell.table[0] in "AB" and "-Fig" not in cell.table and cell.table != "B1":
            assert (cell.table, cell.model, cell.setting.removesuffix(CONTROLLED)) in keys, cell
    runs = plan.runs
    ids = [r.id for r in runs]
    assert len(ids) == len(set(ids))
    position = {r.id: i for i, r in enumerate(runs)}
    for r in runs:
        if r.upstream is not None:
            assert position[r.upstream.id] < position[r.id]
        assert (NOTEBOOKS / f"{r.notebook}.py").is_file()


def test_paper_profile_uses_the_papers_networks_and_imagenet_weights():
    plan = build_plan("paper")
    backbones = {c.backbone for c in plan.cells if c.table in ("A2", "B3")}
    assert {"resnet50", "resnet101", "vgg16", "densenet169", "crnet"} <= backbones
    b3 = [c for c in plan.cells if c.table == "B3" and c.setting == "Trans."]
    assert all(r.init == "imagenet" and r.upstream is None for c in b3 if c.backbone != "crnet" for r in c.runs)
    assert len(b3[0].runs) == 3  # seeds


def test_crnet_transfer_starts_from_an_stl_n_run_at_every_profile():
    """Defect: at the paper profile B's CRNet "Trans." asked for torchvision ImageNet weights,
    which do not exist for CRNet; B trained it on ImageNet itself, so it needs an STL-N run."""
    for profile in ("smoke", "cpu", "paper"):  # quick runs no CRNet
        crnet = [c for c in build_plan(profile).cells if c.table == "B3" and c.model == "CRNet"
                 and c.setting == "Trans."]
        assert crnet and all(r.upstream is not None and r.upstream.notebook == "stl_n"
                             for c in crnet for r in c.runs), profile


@pytest.mark.parametrize("profile", list(PROFILES))
def test_dry_run_validates_every_run_of_every_profile(profile):
    from covtl.study import dry_run

    report = dry_run(profile)
    assert report.ok, {k: v for k, v in report.problems.items() if v}
    assert len(report.runs) == len(build_plan(profile).runs)
    if profile == "paper":
        assert report.wall_s is None  # sized in GPU-hours, not from CPU costs
    else:
        assert report.wall_s > 0 and set(report.seconds) == {r.id for r in report.runs}


def test_dry_run_names_what_is_wrong():
    from covtl.study import Run, check_run

    stl_n = Run("stl_n", (("backbone", "resnet18"), ("n_attn", 0), ("recipe", "a_stl_n"), ("seed", 0)))
    bad = [
        (Run("finetune", (("backbone", "crnet"), ("n_attn", 0), ("recipe", "b_transfer"), ("seed", 0)),
             init="imagenet"), "no ImageNet weights for crnet"),
        (Run("finetune", (("backbone", "resnet18"), ("n_attn", 5), ("recipe", "b_transfer"), ("seed", 0)),
             stl_n), "another architecture"),
        (Run("finetune", (("backbone", "resnet18"), ("epochs", 3), ("seed", 0))), "'epochs' is not in"),
        (Run("finetune", (("backbone", "resnet18"), ("recipe", "nope"), ("seed", 0))), "unknown recipe"),
        (Run("finetune", (("backbone", "resnet18"), ("seed", "0"))), "is a str"),
        (Run("nope", ()), "does not exist"),
        (Run("finetune", (("backbone", "resnet18"), ("seed", 0)),
             Run("explain", (("backbone", "resnet18"), ("seed", 0)))), "writes no checkpoint"),
    ]
    for run, message in bad:
        problems, _ = check_run(run, "cpu", None)
        assert any(message in p for p in problems), (run, problems)
    assert check_run(Run("finetune", (("backbone", "resnet18"), ("n_attn", 0), ("recipe", "b_transfer"),
                                      ("seed", 0)), stl_n), "cpu", None)[0] == []


def test_shared_upstream_runs_are_one_run():
    plan = build_plan("cpu")
    a2 = next(c for c in plan.cells if c.table == "A2" and c.model == "R-50 5 ATTNs")
    a3 = next(c for c in plan.cells if c.table == "A3" and c.model == "R-50 5 ATTNs" and c.setting == "w Ours")
    assert [r.id for r in a2.runs] == [r.id for r in a3.runs]
    chain = [r.notebook for r in a2.runs[0].chain()]
    assert chain == ["stl_n", "stl_m", "sstl_m", "finetune"]


def test_unknown_profile_and_table_raise(tmp_path):
    from covtl.study import run_study

    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        build_plan("huge")
    with pytest.raises(ValueError, match="unknown table"):
        run_study("smoke", results=tmp_path, data_root=str(tmp_path), only=["Z9"])


def test_plan_json_round_trips():
    plan = build_plan("smoke").to_json()
    assert json.loads(json.dumps(plan)) == plan
    assert set(plan["runs"]) == {r for c in plan["cells"] for r in c["runs"]} | {
        r["upstream"] for r in plan["runs"].values() if r["upstream"]
    }


def test_cpu_plan_keeps_every_comparison_with_three_seeds_within_its_budget():
    """The cpu profile: every table keeps at least one row of each comparison it makes, every
    fine-tune cell has >= 3 seeds, and the dry run's estimate fits 6 hours on 2 cores."""
    from covtl.study import dry_run

    plan = build_plan("cpu")
    paper = load_paper_numbers()
    for table, rows in paper[paper.table.str.match(r"^[AB]\d$") & ~paper.table.isin(["B1", "B2"])].groupby("table"):
        wanted = {s for s in rows.setting if "LMN" not in s and "LNM" not in s}  # B4: data covtl lacks
        ran = {c.setting for c in plan.cells if c.table == table}
        assert wanted <= ran, (table, wanted - ran)
    for cell in plan.cells:
        if cell.runs and cell.runs[0].notebook == "finetune":
            assert len({dict(r.params)["seed"] for r in cell.runs}) >= 3, cell
    assert {"Baseline", "5 ATTNs"} <= {c.model.split(" ", 1)[1] for c in plan.cells if c.table == "A4"}
    assert dry_run("cpu").wall_s <= 6 * 3600


def test_quick_runs_the_headline_rows_and_says_why_the_others_are_not_run():
    plan = build_plan("quick")
    tables = {c.table for c in plan.cells}
    assert {"A2", "A4", "B3", "B5"} <= tables and "A3" not in tables
    assert any(n["table"] == "A3" and "quick" in n["why"] for n in plan.not_run)
    assert len({(n["table"], n["model"]) for n in plan.not_run}) == len(plan.not_run)  # one line each


def test_pretraining_chains_repeat_per_seed_where_the_profile_says_so():
    """At ``paper`` every fine-tune seed starts from its own pretraining chain; at ``cpu`` one chain
    serves every seed (the book says which variance the intervals cover)."""
    for profile, chains in (("paper", 3), ("cpu", 1)):
        plan = build_plan(profile)
        assert plan.to_json()["pretrain_seeds"] == chains
        ours = next(c for c in plan.cells if c.table == "A2" and c.model == "R-50 Baseline")
        sources = [r.upstream.id for r in ours.runs]
        assert len(set(sources)) == chains, profile
        stl_n = {r.id for r in plan.runs if r.notebook == "stl_n" and dict(r.params).get("backbone") == ours.backbone
                 and dict(r.params).get("n_attn") == 0}
        assert len(stl_n) == chains, profile
        # seed s of every fine-tune cell starts from chain s mod chains
        for s, run in enumerate(ours.runs):
            assert dict(run.params)["seed"] == s
            assert dict(run.chain()[0].params)["seed"] == s % chains


def test_table_3_has_a_controlled_row_set_that_differs_only_in_the_objective():
    plan = build_plan("cpu")
    cells = {c.setting: c for c in plan.cells if c.table == "A3" and c.model == "R-50 Baseline"}
    assert {"w Ours", "w MoCo", "w SimCLR", "w MoCo (controlled)", "w SimCLR (controlled)"} <= set(cells)

    def ssl_params(setting: str) -> dict:
        return dict(cells[setting].runs[0].upstream.params)

    ours, moco, simclr = ssl_params("w Ours"), ssl_params("w MoCo (controlled)"), ssl_params("w SimCLR (controlled)")
    assert ours["recipe"] == moco["recipe"] == simclr["recipe"] == "a_sstl_m"
    assert moco["method"] == "a_region_moco" and moco["region_weight"] == 0.0 and "region_weight" not in ours
    assert simclr["method"] == "simclr"
    assert ssl_params("w MoCo")["recipe"] == "a_moco"  # the literal set keeps each method's own recipe
    upstreams = {cells[s].runs[0].upstream.upstream.id for s in ("w Ours", "w MoCo (controlled)",
                                                                 "w SimCLR (controlled)")}
    assert len(upstreams) == 1  # one STL-N -> STL-M chain under all three


def test_finished_runs_are_rebuilt_when_a_later_run_needs_their_missing_checkpoint(tmp_path):
    """A clone of the recorded study has result files but no checkpoints (never committed)."""
    from covtl.runner import _prepare, _rebuilt, checkpoints_to_rebuild
    from covtl.study import Run

    a = Run("stl_n", (("seed", 0),))
    b = Run("stl_m", (("seed", 0),), upstream=a)
    c = Run("finetune", (("seed", 0),), upstream=b)
    keys = {a.id: "ka", b.id: "kb", c.id: "kc"}

    def finish(run, checkpoint: bool, test=None):
        folder = tmp_path / "runs" / run.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "run.json").write_text(json.dumps({"key": keys[run.id], "status": "done"}))
        (folder / "metrics.json").write_text(json.dumps({"test": test}))
        if checkpoint:
            (folder / "last.pt").write_bytes(b"x")

    assert checkpoints_to_rebuild([a, b, c], keys, tmp_path) == set()  # nothing finished: nothing to rebuild
    finish(a, checkpoint=False)
    finish(b, checkpoint=False, test={"accuracy": 0.7})
    assert checkpoints_to_rebuild([a, b, c], keys, tmp_path) == {a.id, b.id}  # c runs: b and a again
    (tmp_path / "runs" / a.id / "last.pt").write_bytes(b"x")
    assert checkpoints_to_rebuild([a, b, c], keys, tmp_path) == {b.id}
    finish(c, checkpoint=False)
    assert checkpoints_to_rebuild([a, b, c], keys, tmp_path) == set()  # nothing left to run

    # the rebuilt run's old files wait aside until the new run has finished, then go
    params = _prepare(b, "kb", tmp_path, "cpu", "", rebuild=True)
    assert params is not None and (tmp_path / "runs" / f"{b.id}.before-rebuild" / "metrics.json").is_file()
    (tmp_path / "runs" / b.id / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.7}}))
    assert "the same test metrics" in _rebuilt(b, tmp_path)
    assert not (tmp_path / "runs" / f"{b.id}.before-rebuild").exists()


def test_every_module_a_stage_imports_is_hashed_into_the_run_keys():
    """A run's key hashes covtl.study.ENGINE_MODULES: a stage importing anything else would go stale unseen."""
    import subprocess
    import sys

    from covtl.study import ENGINE_MODULES, REPO

    # the stage notebooks import covtl.stages and covtl.report; stages import the rest lazily
    lazy = sorted({node.module for node in ast.walk(ast.parse((REPO / "covtl" / "stages.py").read_text()))
                   if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module})
    code = ("import importlib, sys\n"
            f"for m in {['covtl.stages', *('covtl.' + m for m in lazy)]!r}: importlib.import_module(m)\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('covtl')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    tops = {m.split(".")[1] for m in loaded if "." in m}
    outside = {t for t in tops if t not in ENGINE_MODULES and f"{t}.py" not in ENGINE_MODULES}
    assert not outside, f"stages import covtl modules outside ENGINE_MODULES (not hashed into run keys): {outside}"


def test_a_running_study_is_readable_its_plan_written_before_the_first_run(tmp_path, monkeypatch):
    import covtl.runner as runner
    from covtl.study import run_study

    seen = []

    def fake_execute(run, out, params, kernels=None, log_output=False):
        study = json.loads((tmp_path / "smoke" / "study.json").read_text())
        seen.append(((tmp_path / "smoke" / "plan.json").is_file(), study["complete"]))
        (out / "metrics.json").write_text("{}")

    monkeypatch.setattr(runner, "_execute", fake_execute)
    monkeypatch.setattr(runner, "parameter_counts", lambda: [])
    monkeypatch.setattr("covtl.report.write_study_summary", lambda out_root: None)
    run_study("smoke", results=tmp_path, only=["B1"], jobs=1, warm_kernels=False)
    assert seen == [(True, False)]
    assert json.loads((tmp_path / "smoke" / "study.json").read_text())["complete"] is True
