"""The package set is declared twice (pip and conda); the two lists must agree."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip = dict(_split(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for entry in env["dependencies"]:
        if isinstance(entry, str) and not entry.startswith(("python", "pip")):
            name, spec = _split(entry.replace("=", "==", 1) if re.match(r"^[^<>=!]+=[^=]", entry) else entry)
            conda[CONDA_NAMES.get(name, name)] = spec
    assert conda == pip
    python = next(e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python"))
    assert python == "python=3.11" and project["requires-python"].startswith(">=3.11")


def test_jupyter_book_is_pinned_below_2():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "jupyter-book<2" in project["dependencies"]


def test_jupytext_pairs_the_stage_notebooks_only_and_git_ignores_their_ipynb():
    import shutil
    import subprocess

    from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file
    from jupytext.paired_paths import paired_paths

    config = load_jupytext_configuration_file(find_jupytext_configuration_file(str(ROOT / "notebooks")))
    stage = ROOT / "notebooks" / "finetune.ipynb"
    formats = config.default_formats(str(stage))
    paths = {Path(p).name for p, _ in paired_paths(str(stage), ".ipynb", formats)}
    assert paths == {"finetune.ipynb", "finetune.py"}
    assert config.default_formats(str(ROOT / "book" / "a1.md")) is None  # MyST chapters stay unpaired
    assert config.default_formats(str(ROOT / "results" / "quick" / "runs" / "r" / "notebook.ipynb")) is None
    if (ROOT / ".git").exists() and shutil.which("git"):
        ignored = subprocess.run(["git", "check-ignore", "-q", "notebooks/finetune.ipynb"], cwd=ROOT)
        assert ignored.returncode == 0, "executed notebooks/*.ipynb must stay out of git (.gitignore)"
