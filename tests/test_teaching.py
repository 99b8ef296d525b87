"""The teaching chapter (book/teaching.md) and its helpers (covtl/teaching.py).

The chapter's commands are read from its code blocks, so the test follows the text: each kind of
command (program, subcommand and the options it uses) runs once, at the smoke profile, from a
scratch working directory laid out like the repository (notebooks/, results/smoke/ from the
session's smoke study). The study and book commands are what the ``smoke_results`` and
``smoke_book`` fixtures run; here they are only parsed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from covtl import teaching as T

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "teaching.md"
BIN = Path(sys.executable).parent
PROGRAMS = {"covtl", "jupytext", "papermill"}


def chapter_commands(text: str) -> list[str]:
    """The shell commands of the chapter's ``bash`` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def at_smoke(command: str) -> str:
    """The command at the smoke profile, with one seed where it loops over several."""
    command = re.sub(r"\bquick\b", "smoke", command)
    return re.sub(r"--seeds((?: \d+)+)", lambda m: "--seeds " + m.group(1).split()[0], command)


def kind(command: str) -> tuple[str, ...]:
    """What makes two commands the same kind: program, subcommand and the set of options used."""
    words = shlex.split(command)
    program = Path(words[0]).name
    sub = words[1:3] if words[1:2] == ["teach"] else words[1:2] if program == "covtl" else []
    options = sorted({w for w in words if w.startswith("-")})
    return (program, *sub, *options)


COMMANDS = chapter_commands(CHAPTER.read_text())


def test_chapter_commands_are_copyable_from_the_repository_root():
    assert len(COMMANDS) >= 10, COMMANDS
    for command in COMMANDS:
        program = command.split()[0]
        assert program in ("make", "mkdir") or (program.startswith(".venv/bin/") and Path(program).name in PROGRAMS), (
            command)


def test_chapter_commands_parse():
    from covtl.cli import build_parser

    for command in map(at_smoke, COMMANDS):
        words = shlex.split(command)
        if Path(words[0]).name != "covtl":
            continue
        if words[1] == "teach":
            T.build_parser().parse_args(words[2:])
        else:
            build_parser().parse_args(words[1:])


def test_at_smoke_and_kinds():
    command = '.venv/bin/covtl teach rerun --profile quick --table A4 --model "R-50 Baseline" --seeds 0 1 2 3 4'
    assert at_smoke(command).endswith("--seeds 0") and "--profile smoke" in at_smoke(command)
    assert kind(command) == ("covtl", "teach", "rerun", "--model", "--profile", "--seeds", "--table")
    assert chapter_commands("```bash\n.venv/bin/a b \\\n    c  # note\n# only a comment\n```\n") == [".venv/bin/a b c"]


def test_covtl_cli_offers_the_teaching_helpers():
    """covtl/cli.py wires :func:`covtl.teaching.register` in (``covtl teach ...``)."""
    from covtl.cli import build_parser

    args = build_parser().parse_args(["teach", "rows", "--table", "A4"])
    assert args.func is T._cmd_rows


@pytest.mark.slow
def test_chapter_commands_run_at_smoke(smoke_results, tmp_path):
    """Each kind of command of the chapter, in the chapter's order, at the smoke profile."""
    work = tmp_path / "repo"
    (work / "notebooks").mkdir(parents=True)
    for path in (ROOT / "notebooks").glob("*.py"):
        shutil.copy(path, work / "notebooks" / path.name)
    shutil.copy(ROOT / "jupytext.toml", work / "jupytext.toml")
    (work / "results").mkdir()
    (work / "results" / "smoke").symlink_to(smoke_results / "smoke", target_is_directory=True)

    ran, seen = [], set()
    for command in map(at_smoke, COMMANDS):
        program = Path(command.split()[0]).name
        if program == "make" or re.match(r"\S+/covtl (study|book)\b", command) or kind(command) in seen:
            continue  # the study and the book: the smoke_results / smoke_book fixtures
        seen.add(kind(command))
        shell = re.sub(r"^\.venv/bin/covtl teach ", f"{shlex.quote(sys.executable)} -m covtl.teaching ", command)
        shell = re.sub(r"^\.venv/bin/", f"{shlex.quote(str(BIN))}/", shell)
        done = subprocess.run(["bash", "-c", shell], cwd=work, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        ran.append(command)
    assert len(ran) >= 8, ran
    finished = list((work / "results" / "class").rglob("metrics.json"))
    assert any("finetune" == json.loads(p.read_text())["stage"] for p in finished), finished
    assert any("scores" in json.loads(p.read_text()) for p in finished), finished
    assert not (smoke_results / "smoke" / "runs" / "class").exists()  # the study's results are left alone


# ------------------------------------------------------------------------ helpers on a made-up study


@pytest.fixture
def study(tmp_path) -> Path:
    """A results folder with one upstream run (a checkpoint file) and two rows."""
    root = tmp_path / "results" / "quick"
    runs = {"up": {"notebook": "stl_n", "params": {"backbone": "resnet18", "n_attn": 0, "recipe": "a_stl_n", "seed": 0},
                   "upstream": None, "init": ""},
            "ft": {"notebook": "finetune", "params": {"backbone": "resnet18", "n_attn": 0, "recipe": "b_transfer",
                                                      "seed": 0}, "upstream": "up", "init": ""},
            "tr": {"notebook": "transferability", "params": {"backbone": "resnet18", "n_attn": 0, "seed": 0,
                                                             "source_classes": 0}, "upstream": "up", "init": ""}}
    cells = [{"table": "B3", "model": "ResNet-18", "setting": "Trans.", "backbone": "resnet18", "runs": ["ft"]},
             {"table": "A6", "model": "R-50 Baseline", "setting": "w STL-N", "backbone": "resnet18", "runs": ["tr"]}]
    for rid in runs:
        (root / "runs" / rid).mkdir(parents=True)
    (root / "runs" / "up" / "last.pt").write_bytes(b"")
    (root / "runs" / "ft" / "metrics.json").write_text(json.dumps({
        "provenance": {"device": "cpu", "cpu_threads": 1}, "n_train": 10,
        "test": {"best_val": {"n_images": 4, "covid_positive": {"accuracy": {"value": 0.75}, "auc": 0.5, "f1": None},
                              "noncovid_positive": {"accuracy": {"value": 0.75}, "auc": 0.5, "f1": 0.4}}}}))
    (root / "runs" / "ft" / "run.json").write_text(json.dumps({"status": "done", "wall_time_s": 90.0}))
    (root / "plan.json").write_text(json.dumps({"profile": "quick", "cells": cells, "not_run": [], "runs": runs}))
    (root / "study.json").write_text(json.dumps({"profile": "quick", "synthetic": True, "runs": 3, "jobs": 2}))
    return root


def test_a_rerun_changes_one_thing_and_keeps_the_rest(study, tmp_path):
    job = T.plan_rerun(study, "B3", "ResNet-18", "Trans.", seed=3, recipe="b_transfer_frozen", out=tmp_path / "class")
    assert job.stage == "finetune"
    assert job.params["init"] == str((study / "runs" / "up" / "last.pt").resolve())
    assert job.params | {"init": "", "out_dir": ""} == {
        "backbone": "resnet18", "n_attn": 0, "recipe": "b_transfer_frozen", "seed": 3, "profile": "quick",
        "data_root": "", "init": "", "threads": 1, "out_dir": ""}
    assert job.out_dir == (tmp_path / "class" / "quick" / "B3_ResNet-18_Trans._b-transfer-frozen" / "s3").resolve()
    assert "-r recipe b_transfer_frozen" in job.command() and "-p seed 3" in job.command()


def test_a_rerun_as_another_stage_takes_only_that_stages_parameters(study, tmp_path):
    job = T.plan_rerun(study, "A6", "R-50 Baseline", "w STL-N", stage="finetune", out=tmp_path)
    assert job.stage == "finetune" and "source_classes" not in job.params
    assert set(job.params) <= set(T.stage_parameters("finetune"))
    with pytest.raises(ValueError, match="takes no recipe"):
        T.plan_rerun(study, "A6", "R-50 Baseline", "w STL-N", recipe="b_transfer")
    with pytest.raises(ValueError, match="--model 'R-50 Baseline' --setting 'w STL-N'"):
        T.plan_rerun(study, "A6", "R-50 Baseline", "w/o TL")
    with pytest.raises(ValueError, match="was not run at the quick profile"):
        T.plan_rerun(study, "A2", "R-50 Baseline", "w TL")


def test_scoring_a_fine_tune_row_scores_its_starting_checkpoint(study, tmp_path):
    job = T.plan_score(study, "B3", "ResNet-18", "Trans.", out=tmp_path)
    assert job.stage == "transferability" and job.params["init"].endswith("up/last.pt")
    assert job.params["source_classes"] == 20  # the quick profile's natural classes, for a random head


def test_summaries_read_both_kinds_of_record(study):
    row = T.book_rows([("B3", "ResNet-18", "Trans.")], study).iloc[0]
    assert row["accuracy"] == 0.75 and pd.isna(row["f1"]) and row["test images"] == 4
    scores = T.run_summary({"scores": {"leep": -0.5, "nce": -0.4, "logme": 1.0, "h_score": 0.5}})
    assert scores["leep (bits)"] == pytest.approx(-0.5 / 0.6931471805599453)
    table = T.positive_classes(json.loads((study / "runs" / "ft" / "metrics.json").read_text()))
    assert list(table.columns) == ["COVID positive", "NonCOVID positive"]
    assert table.loc["f1", "NonCOVID positive"] == 0.4
    assert "90 s" in T.time_note([("B3", "ResNet-18", "Trans.", 2)], root=study).data
    assert "about 1 min with 2 at a time" in T.study_time_note(study).data
    assert "quick" in T.class_note(study).data and "Not yet run" in T.class_note(study.parent / "none").data


def test_a_subset_keeps_a_share_of_each_class_s_training_patients(tmp_path, monkeypatch):
    from covtl.data import synth
    from covtl.stages import data_fingerprint

    src = tmp_path / "synthetic"
    synth.generate(src, seed=0, scale="tiny")
    counts = T.subset_data_root(tmp_path / "half", data_root=src, fraction=0.5)
    train = counts.loc["train"]
    assert (train["patients kept"] == (train["patients"] / 2).round().clip(lower=1)).all()
    assert (counts.loc[["val", "test"], "images kept"] == counts.loc[["val", "test"], "images"]).all()
    assert (tmp_path / "half" / "covidx-mini").is_symlink()
    assert data_fingerprint(tmp_path / "half") != data_fingerprint(src)
    done = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=tmp_path / "half" / "covid-ct")
    assert done.returncode == 0
    with pytest.raises(FileExistsError):
        T.subset_data_root(tmp_path / "half", data_root=src)
