"""Warm kernels: cleared between notebooks, replaced when dead, and results as with fresh kernels."""

from __future__ import annotations

import json
import threading

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from covtl.data import synth
from covtl.kernels import ENGINE, WarmKernels, gpu_for_worker, register_engine, visible_gpus, worker_env
from covtl.study import run_study


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return str(path)


def _execute(kernels, src, out):
    register_engine()
    return papermill.execute_notebook(src, str(out), kernel_name="python3", progress_bar=False,
                                      engine_name=ENGINE, km=kernels.get())


@pytest.mark.slow
def test_a_warm_kernel_forgets_the_previous_notebook_and_restarts_its_counter(tmp_path):
    kernels = WarmKernels()
    try:
        first = _notebook(tmp_path / "a.ipynb", "import os\nleaked = os.getpid()", "leaked")
        nb = _execute(kernels, first, tmp_path / "a.out.ipynb")
        pid = int(nb.cells[1].outputs[0]["data"]["text/plain"])
        assert [c.execution_count for c in nb.cells] == [1, 2]

        second = _notebook(tmp_path / "b.ipynb", "import os\nos.getpid()", "leaked")
        with pytest.raises(PapermillExecutionError, match="NameError"):
            _execute(kernels, second, tmp_path / "b.out.ipynb")
        code = [c for c in nbformat.read(tmp_path / "b.out.ipynb", as_version=4).cells if c.cell_type == "code"]
        assert int(code[0].outputs[0]["data"]["text/plain"]) == pid  # the same, reused kernel
        assert code[0].execution_count == 1

        # a kernel that dies is replaced by a new one at the next notebook
        die = _notebook(tmp_path / "c.ipynb", "import os\nos._exit(1)")
        with pytest.raises(Exception, match="(?i)kernel died|dead"):  # noqa: B017
            _execute(kernels, die, tmp_path / "c.out.ipynb")
        nb = _execute(kernels, _notebook(tmp_path / "d.ipynb", "import os\nos.getpid()"), tmp_path / "d.out.ipynb")
        assert int(nb.cells[0].outputs[0]["data"]["text/plain"]) != pid
    finally:
        kernels.close()


def _numbers(metrics: dict) -> str:
    """What a run measured, without the fields that legitimately differ between two runs."""
    drop = {"provenance", "wall_time_s", "seconds", "created", "config", "stage_config", "elapsed_s", "time_s",
            "timing"}

    def clean(x):
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k not in drop and "time" not in k}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(metrics), sort_keys=True)


@pytest.mark.slow
def test_runs_in_a_warm_kernel_match_runs_in_fresh_kernels(tmp_path):
    root = tmp_path / "data"
    synth.generate(root, scale="tiny", workers=1)
    results = {}
    for warm in (True, False):
        out = run_study("smoke", results=tmp_path / str(warm), data_root=str(root), only=["B3"], jobs=1,
                        warm_kernels=warm)
        results[warm] = {p.name: _numbers(json.loads((p / "metrics.json").read_text()))
                         for p in sorted((out / "runs").iterdir())}
    assert len(results[True]) >= 4  # several notebooks ran one after another in one kernel
    assert results[True] == results[False]


def test_each_worker_gets_its_own_gpu_in_turn():
    assert [gpu_for_worker(i, ["0", "1", "2"]) for i in range(5)] == ["0", "1", "2", "0", "1"]
    assert gpu_for_worker(3, []) is None  # no CUDA: the kernel environment is left alone
    assert worker_env(1, []) == {}
    assert worker_env(3, ["0", "1"]) == {"CUDA_VISIBLE_DEVICES": "1"}
    with pytest.raises(ValueError, match="worker_index"):
        gpu_for_worker(-1, ["0"])
    # without CUDA_VISIBLE_DEVICES: all devices; with it: its entries (indices or UUIDs), as CUDA sees them
    assert visible_gpus({}, device_count=0) == []
    assert visible_gpus({}, device_count=3) == ["0", "1", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4,6"}, device_count=2) == ["4", "6"]
    assert [gpu_for_worker(i, visible_gpus({"CUDA_VISIBLE_DEVICES": "4, 6"}, 2)) for i in range(3)] == ["4", "6", "4"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b,bad"}, device_count=2) == ["GPU-a", "GPU-b"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, device_count=0) == []


def test_worker_threads_are_numbered_once_each():
    kernels = WarmKernels(env=lambda i: worker_env(i, ["2", "5"]))
    seen: dict[str, list[int]] = {}

    def work(name):
        seen[name] = [kernels.worker_index(), kernels.worker_index()]
        seen[name + "-env"] = kernels.kernel_env()["CUDA_VISIBLE_DEVICES"]

    threads = [threading.Thread(target=work, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
        t.join()
    assert seen["a"] == [0, 0] and seen["b"] == [1, 1]
    assert (seen["a-env"], seen["b-env"]) == ("2", "5")
    assert WarmKernels().kernel_env() is None  # no env: kernels inherit this process's


@pytest.mark.slow
@pytest.mark.parametrize("reuse", [True, False])
def test_a_workers_kernel_sees_only_its_gpu(tmp_path, reuse):
    kernels = WarmKernels(env=lambda i: worker_env(i, ["3", "7"]), reuse=reuse)
    src = _notebook(tmp_path / "gpu.ipynb", "import os\nos.environ['CUDA_VISIBLE_DEVICES'], os.getpid()")
    got: dict[int, list] = {}

    def work(worker):
        outs = [_execute(kernels, src, tmp_path / f"{worker}-{k}.ipynb") for k in range(2 if worker == 0 else 1)]
        got[worker] = [eval(nb.cells[0].outputs[0]["data"]["text/plain"]) for nb in outs]

    try:
        for worker in (0, 1):  # one after the other, so thread 0 is worker 0
            t = threading.Thread(target=work, args=(worker,))
            t.start()
            t.join()
    finally:
        kernels.close()
    assert [g[0] for g in got[0]] == ["3", "3"] and got[1][0][0] == "7"
    first, second = (g[1] for g in got[0])
    assert (first == second) == reuse  # reuse=False: a fresh kernel (process) per notebook


def test_run_study_gives_each_worker_a_gpu(tmp_path, monkeypatch):
    import covtl.kernels
    import covtl.runner

    monkeypatch.setattr(covtl.kernels, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(covtl.runner, "parameter_counts", lambda: [])
    envs: list[dict] = []
    lock = threading.Lock()

    def fake_execute(run, out, params, kernels=None, log_output=False):  # record the worker's kernel env, start nothing
        env = kernels.kernel_env()
        with lock:
            envs.append((kernels.worker_index(), env["CUDA_VISIBLE_DEVICES"], env["COVTL_JOBS"]))
        (out / "metrics.json").write_text("{}")

    monkeypatch.setattr(covtl.runner, "_execute", fake_execute)
    for warm in (True, False):
        envs.clear()
        run_study("smoke", results=tmp_path / str(warm), only=["B3"], jobs=2,
                  warm_kernels=warm)
        assert len(envs) >= 2 and {e[0] for e in envs} <= {0, 1}
        assert all(gpu == str(worker) and jobs == "2" for worker, gpu, jobs in envs)
