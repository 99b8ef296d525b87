"""Warm kernels: cleared between notebooks, replaced when dead, and results as with fresh kernels."""

from __future__ import annotations

import json

import nbformat
import papermill
import pytest
from papermill.exceptions import PapermillExecutionError

from covtl.data import synth
from covtl.kernels import ENGINE, WarmKernels, register_engine
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
    drop = {"provenance", "wall_time_s", "seconds", "created", "config", "stage_config", "elapsed_s", "time_s"}

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
                        echo=lambda *_: None, warm_kernels=warm)
        results[warm] = {p.name: _numbers(json.loads((p / "metrics.json").read_text()))
                         for p in sorted((out / "runs").iterdir())}
    assert len(results[True]) >= 4  # several notebooks ran one after another in one kernel
    assert results[True] == results[False]
