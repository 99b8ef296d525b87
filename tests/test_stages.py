"""Stage functions on tiny synthetic data: the decoded-image cache changes speed, not results."""

from __future__ import annotations

import json

import pytest

from covtl.data import synth
from covtl.stages import StageConfig, finetune_stage, ssl_stage, supervised_source_stage


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synth.generate(root, scale="tiny", parts=("covid-ct", "covidx-mini"), workers=1)
    return root


def _run(stage, tmp_path, name: str, cache: bool, root, *args):
    cfg = StageConfig(profile="smoke", data_root=str(root), out_dir=str(tmp_path / name), decoded_cache=cache)
    return stage(cfg, *args)


@pytest.mark.parametrize("stage,args", [
    (finetune_stage, ("a_finetune",)),
    (finetune_stage, ("b_transfer",)),
    (supervised_source_stage, ("covidx", "a_stl_m")),
    (ssl_stage, ("moco_v2", "b_moco")),
    (ssl_stage, ("a_region_moco", "a_sstl_m")),
], ids=["finetune-a", "finetune-b", "stl_m", "moco_v2", "region_moco"])
def test_decoded_cache_gives_the_same_run(stage, args, tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COVTL_CACHE", str(tmp_path / "cache"))
    uncached = _run(stage, tmp_path, "files", False, tiny_root, *args)
    assert not (tmp_path / "cache").exists()
    cached = _run(stage, tmp_path, "cached", True, tiny_root, *args)
    assert list((tmp_path / "cache").glob("decoded-*.npy")), "the cached run built no cache"
    losses = [[h["train_loss"] for h in r["history"]] for r in (uncached, cached)]
    assert losses[0] == losses[1]
    if "test" in uncached:
        assert json.dumps(uncached["test"], sort_keys=True) == json.dumps(cached["test"], sort_keys=True)


def test_region_weight_is_a_region_moco_setting_and_is_recorded(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COVTL_CACHE", str(tmp_path / "cache"))
    cfg = StageConfig(profile="smoke", data_root=str(tiny_root), out_dir=str(tmp_path / "other"))
    with pytest.raises(ValueError, match="region_weight=0.0 only applies to method 'a_region_moco'"):
        ssl_stage(cfg, "moco_v1", "a_moco", region_weight=0.0)
    with pytest.raises(ValueError, match="region_weight must be >= 0"):
        ssl_stage(cfg, "a_region_moco", "a_sstl_m", region_weight=-0.5)
    cfg = StageConfig(profile="smoke", data_root=str(tiny_root), out_dir=str(tmp_path / "controlled"))
    result = ssl_stage(cfg, "a_region_moco", "a_sstl_m", region_weight=0.0)
    saved = json.loads((tmp_path / "controlled" / "metrics.json").read_text())
    assert saved["stage_config"]["region_weight"] == result["stage_config"]["region_weight"] == 0.0
    assert saved["stage_config"]["method"] == "a_region_moco" and saved["stage_config"]["profile"] == "smoke"
    assert saved["provenance"]["data"]["region_weight"] == 0.0


def test_threads_parameter_sets_and_records_the_thread_count(tiny_root, tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("COVTL_CACHE", str(tmp_path / "cache"))
    before = torch.get_num_threads()
    try:
        cfg = StageConfig(profile="smoke", data_root=str(tiny_root), out_dir=str(tmp_path / "t1"), threads=1)
        assert torch.get_num_threads() == 1
        result = finetune_stage(cfg, "a_finetune")
    finally:
        torch.set_num_threads(before)
    assert result["provenance"]["cpu_threads"] == 1
    assert "torch" in result["provenance"]["packages"]
    # a line per epoch in the output, though no progress bar is drawn (not a terminal)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == len(result["history"]) and "train_loss" in lines[0] and "val_acc" in lines[0]
    with pytest.raises(ValueError, match="threads"):
        StageConfig(profile="smoke", threads=-1)
