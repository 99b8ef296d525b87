"""The command line: model listing, synthetic data, and a one-table study run with caching."""

from __future__ import annotations

import json
import re

import pytest

from covtl.cli import main


def test_models_json_lists_every_network(capsys):
    assert main(["models", "--json", "--num-classes", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    from covtl.models import MODEL_NAMES

    assert {r["model"] for r in rows} == set(MODEL_NAMES)
    assert {r["n_attn"] for r in rows if r["model"] == "resnet101"} == {0, 1, 5}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic"
    assert main(["data", "synth", "--out", str(root), "--scale", "tiny"]) == 0
    return root


@pytest.mark.slow
def test_study_runs_a_table_then_skips_it_when_nothing_changed(tmp_path, tiny_root, capsys):
    args = ["study", "--profile", "smoke", "--results", str(tmp_path), "--data-root", str(tiny_root),
            "--only", "B1"]
    assert main(args) == 0
    out = tmp_path / "smoke"
    plan = json.loads((out / "plan.json").read_text())
    (run_id,) = plan["cells"][0]["runs"]
    record = json.loads((out / "runs" / run_id / "metrics.json").read_text())
    assert record["stage"] == "audit" and "summary" in record["tables"]
    assert json.loads((out / "runs" / run_id / "run.json").read_text())["status"] == "done"
    assert (out / "runs" / run_id / "notebook.ipynb").is_file()
    assert (out / "summary.csv").read_text().startswith("run,notebook,tables,cells,")
    rows = json.loads((out / "b-table2" / "parameters.json").read_text())["rows"]
    counts = {r["model"]: r["parameters"] for r in rows if r["paper"] == "B"}
    assert counts["resnet50"] == 25_557_032
    capsys.readouterr()
    assert main(args) == 0  # second time: nothing changed, nothing runs
    assert "0 runs executed, 1 unchanged" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_run_is_finished_on_the_next_study_and_the_rest_is_kept(tmp_path, tiny_root, capsys):
    args = ["study", "--profile", "smoke", "--results", str(tmp_path), "--data-root", str(tiny_root),
            "--only", "A1"]
    assert main(args) == 0
    runs = sorted((tmp_path / "smoke" / "runs").iterdir())
    assert len(runs) == 3
    victim = runs[1]
    before = json.loads((victim / "metrics.json").read_text())
    record = json.loads((victim / "run.json").read_text())
    # as if the study was killed after the run's last checkpoint, before its record was written
    (victim / "run.json").write_text(json.dumps({**record, "status": "running"}))
    (victim / "metrics.json").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "1 runs executed, 2 unchanged" in capsys.readouterr().err
    after = json.loads((victim / "metrics.json").read_text())
    assert after["history"] == before["history"] and after["best_val"] == before["best_val"]
    assert json.loads((victim / "run.json").read_text())["status"] == "done"


def test_synth_refuses_to_overwrite(tiny_root, capsys):
    assert main(["data", "synth", "--out", str(tiny_root), "--scale", "tiny"]) == 1
    assert re.search("not empty|exists|overwrite", capsys.readouterr().err)


@pytest.mark.slow
def test_a_failing_notebook_names_the_run_and_cell_and_keeps_finished_runs(tmp_path, tiny_root):
    import shutil

    from covtl.study import StudyRunError, run_study

    broken = tmp_path / "broken"
    shutil.copytree(tiny_root, broken)
    (broken / "covid-ct" / "Data-split" / "COVID" / "testCT_COVID.txt").unlink()
    (tmp_path / "res" / "smoke" / "runs" / "keep-me").mkdir(parents=True)
    with pytest.raises(StudyRunError, match=r"run split_audit-s0-\w+ \(notebooks/split_audit.py\) failed in cell \d+"):
        run_study("smoke", results=tmp_path / "res", data_root=str(broken), only=["B1"], jobs=1)
    assert (tmp_path / "res" / "smoke" / "runs" / "keep-me").is_dir()


def test_dry_run_prints_every_run_and_an_estimate_without_training(tmp_path, tiny_root, capsys):
    args = ["study", "--profile", "cpu", "--dry-run", "--data-root", str(tiny_root), "--results", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    from covtl.study import build_plan

    assert all(r.id in out for r in build_plan("cpu").runs)
    assert "every run can start" in out and "estimated wall time" in out
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written
    assert main(["study", "--profile", "paper", "--dry-run"]) == 0
    assert "GPU-hours" in capsys.readouterr().out


def test_emit_commands_prints_every_run_once_upstream_first(tmp_path, capsys):
    import shlex

    from covtl.study import build_plan

    assert main(["study", "--profile", "smoke", "--emit-commands", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = build_plan("smoke").runs
    assert len(lines) == len(runs)
    out_dirs = []
    for line in lines:
        mkdir, papermill = line.split(" && ")
        argv = shlex.split(papermill)
        assert argv[0] == "papermill" and argv[1].startswith("notebooks/") and argv[1].endswith(".ipynb")
        params = {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a in ("-p", "-r")}
        assert params["profile"] == "smoke" and shlex.split(mkdir)[-1] == params["out_dir"]
        out_dirs.append(params["out_dir"])
        if "init" in params and params["init"].endswith("last.pt"):  # an upstream run: printed before
            assert str(tmp_path / "smoke" / "runs" / "") in params["init"]
            assert params["init"].removesuffix("/last.pt") in out_dirs
    assert [d.rsplit("/", 1)[-1] for d in out_dirs] == [r.id for r in runs]  # each run once, in plan order
    assert sum(r.upstream is not None for r in runs) == sum("last.pt" in line for line in lines) > 0
    assert not any(tmp_path.iterdir())  # nothing ran, nothing was written


def test_errors_print_one_line_and_exit_1_with_the_traceback_behind_v(tmp_path, capsys):
    assert main(["study", "--profile", "smoke", "--only", "Z9", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "covtl: error: --only: unknown table(s) ['Z9']" in err and "Traceback" not in err
    assert main(["study", "--profile", "smoke", "--data-root", str(tmp_path / "nowhere"), "--only", "B1",
                 "--results", str(tmp_path)]) == 1
    assert "data root" in capsys.readouterr().err and not (tmp_path / "smoke").exists()
    with pytest.raises(ValueError, match="unknown table"):
        main(["-v", "study", "--profile", "smoke", "--only", "Z9", "--results", str(tmp_path)])


@pytest.mark.slow
def test_submitit_local_executor_runs_a_chain_and_caches_like_the_pool(tmp_path, tiny_root, capsys):
    """--executor local: one process per run through submitit, upstream runs first; a rerun skips them."""
    pytest.importorskip("submitit")
    from covtl.study import build_plan, select

    args = ["study", "--profile", "smoke", "--only", "B7", "--data-root", str(tiny_root), "--results",
            str(tmp_path), "--executor", "local", "--jobs", "2"]
    assert main(args) == 0
    runs = select(build_plan("smoke"), ["B7"]).runs
    assert any(r.upstream for r in runs)  # a chain: stl_n -> sstl_m -> finetune
    for run in runs:
        record = json.loads((tmp_path / "smoke" / "runs" / run.id / "run.json").read_text())
        assert record["status"] == "done" and (tmp_path / "smoke" / "runs" / run.id / "metrics.json").is_file()
    study = json.loads((tmp_path / "smoke" / "study.json").read_text())
    assert study["executor"] == "local" and study["ran"] == len(runs)
    assert list((tmp_path / "smoke" / "submitit").glob("*_log.err"))  # submitit's per-job logs
    capsys.readouterr()
    assert main(args[:-4] + ["--jobs", "1"]) == 0  # the pool executor finds every run finished
    assert json.loads((tmp_path / "smoke" / "study.json").read_text())["skipped"] == len(runs)


def test_slurm_jobs_are_submitted_upstream_first_with_afterok_dependencies(tmp_path, monkeypatch):
    """The SLURM path without a cluster: a stand-in executor records what submitit would be asked."""
    import covtl.runner as runner
    from covtl.study import Study, build_plan, select

    plan = select(build_plan("smoke"), ["B7"])
    keys = {r.id: f"k-{r.id}" for r in plan.runs}
    study = Study("smoke", tmp_path / "smoke", "", str(tmp_path), "fp", keys)

    class Job:
        def __init__(self, n, fn, args):
            self.job_id, self.fn, self.args = str(1000 + n), fn, args

        def result(self):
            return self.fn(*self.args)

        def cancel(self, check=True):
            pass

    class Executor:
        def __init__(self):
            self.deps, self.jobs = [], []

        def update_parameters(self, **kw):
            self.dep = kw.get("slurm_additional_parameters", {}).get("dependency")

        def submit(self, fn, *args):
            self.jobs.append(Job(len(self.jobs), fn, args))
            self.deps.append(self.dep)
            return self.jobs[-1]

    def fake_execute(run, out, params, kernels=None, log_output=False):
        (out / "metrics.json").write_text("{}")

    monkeypatch.setattr(runner, "_execute", fake_execute)
    ex = Executor()
    counts = runner._run_slurm(plan.runs, study, ex)
    assert counts == {"ran": len(plan.runs), "skipped": 0}
    job_of = {run.id: job.job_id for run, job in zip(plan.runs, ex.jobs, strict=True)}
    for run, dep in zip(plan.runs, ex.deps, strict=True):
        assert dep == (f"afterok:{job_of[run.upstream.id]}" if run.upstream else None), run.id
    # resubmitting finds every run done: nothing is submitted again
    ex2 = Executor()
    assert runner._run_slurm(plan.runs, study, ex2) == {"ran": 0, "skipped": len(plan.runs)} and not ex2.jobs
