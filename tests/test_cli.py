"""The command line: model listing and the study runner write what they say."""

from __future__ import annotations

import json

from covtl.cli import main


def test_models_json_lists_every_network(capsys):
    assert main(["models", "--json", "--num-classes", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    from covtl.models import MODEL_NAMES

    assert {r["model"] for r in rows} == set(MODEL_NAMES)
    assert {r["n_attn"] for r in rows if r["model"] == "resnet101"} == {0, 1, 5}


def test_study_writes_results_with_provenance(tmp_path):
    assert main(["study", "--profile", "smoke", "--results", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "smoke" / "b-table2" / "parameters.json").read_text())
    counts = {(r["model"], r["n_attn"]): r["parameters"] for r in result["rows"]}
    assert counts[("resnet50", 0)] == 25_557_032
    assert counts[("resnet50", 5)] > counts[("resnet50", 1)] > counts[("resnet50", 0)]
    prov = result["provenance"]
    assert prov["profile"] == "smoke" and prov["commit"] and prov["torch"]
