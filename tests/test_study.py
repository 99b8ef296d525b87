"""The study plan, the stage notebooks' parameters, and the runner's caching and errors."""

from __future__ import annotations

import ast
import json

import jupytext
import pytest

from covtl.paper import load_paper_numbers
from covtl.study import BACKBONES, NOTEBOOKS, build_plan

COMMON = {"profile", "data_root", "seed", "backbone", "n_attn", "init", "out_dir", "device"}


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.py")), ids=lambda p: p.stem)
def test_notebooks_are_thin_and_document_typed_parameters(path):
    from papermill.translators import PythonTranslator

    nb = jupytext.read(path)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one parameters cell"
    parsed = PythonTranslator.inspect(params[0])
    names = {p.name for p in parsed}
    assert COMMON <= names
    for p in parsed:
        assert p.inferred_type_name in ("str", "int", "float", "bool"), p
        assert p.help, f"{p.name} has no help comment"
    for cell in nb.cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            assert not [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)]


@pytest.mark.parametrize("profile", list(BACKBONES))
def test_plan_covers_every_paper_table(profile):
    plan = build_plan(profile)
    paper = load_paper_numbers()
    planned = {c.table for c in plan.cells} | {n["table"] for n in plan.not_run}
    assert set(paper.table) <= planned | {"B2"}  # B2 (parameter counts) needs no run
    # every planned cell names a row the paper has (so the book can put them side by side)
    keys = set(zip(paper.table, paper.model, paper.setting, strict=True))
    for cell in plan.cells:
        if cell.table[0] in "AB" and "-Fig" not in cell.table and cell.table != "B1":
            assert (cell.table, cell.model, cell.setting) in keys, cell
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
    assert all(r.init == "imagenet" and r.upstream is None for c in b3 for r in c.runs)
    assert len(b3[0].runs) == 3  # seeds


def test_shared_upstream_runs_are_one_run():
    plan = build_plan("quick")
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
