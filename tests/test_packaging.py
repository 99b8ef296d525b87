"""The package set is declared three times: pyproject.toml (ranges for library users),
requirements.lock (the exact versions `make` installs and CI tests) and environment.yml (conda).
They must agree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _locked_extras() -> list[str]:
    """The extras `make lock` resolves (its --extra flags), which `make` installs."""
    recipe = re.search(r"^lock:.*?(?=^\S|\Z)", (ROOT / "Makefile").read_text(), re.M | re.S).group(0)
    return re.findall(r"--extra\s+(\S+)", recipe)


def _declared() -> dict[str, Requirement]:
    """Every requirement `make` installs from pyproject: the dependencies and the locked extras."""
    project = _project()
    reqs = list(project["dependencies"])
    for extra in _locked_extras():
        reqs += project["optional-dependencies"][extra]
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def _lock() -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in LOCK.read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def _pins(environment: dict | None = None) -> dict[str, Version]:
    """name -> pinned version, for the entries whose markers hold in `environment` (default: here)."""
    pins = {}
    for req in _lock():
        if req.marker is None or req.marker.evaluate(environment):
            (spec,) = req.specifier
            assert spec.operator == "==", f"the lock must pin exact versions: {req}"
            name = canonicalize_name(req.name)
            assert name not in pins, f"{name} pinned twice for one environment"
            pins[name] = Version(spec.version)
    return pins


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_every_extra_is_locked():
    assert sorted(_locked_extras()) == sorted(_project()["optional-dependencies"])


def test_lock_pins_every_declared_dependency_inside_pyprojects_range():
    locked: dict[str, list[Version]] = {}
    for req in _lock():
        locked.setdefault(canonicalize_name(req.name), []).append(Version(next(iter(req.specifier)).version))
    for name, req in _declared().items():
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock: run make lock"
        for version in locked[name]:  # every marker branch of the lock, not only this machine's
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside pyproject's {req}: run make lock"
            )
        if req.extras:  # e.g. "foo[bar]": bar's requirements must be locked too
            _assert_extras_locked(req, set(locked))


def _assert_extras_locked(req: Requirement, locked: set[str]) -> None:
    """Read from the installed metadata; checked only where the installed version is the locked one."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(req.name)
    except PackageNotFoundError:
        return
    if _pins().get(canonicalize_name(req.name)) != Version(dist.version):
        return
    for line in dist.requires or []:
        sub = Requirement(line)
        if sub.marker and any(sub.marker.evaluate({"extra": extra}) for extra in req.extras):
            assert canonicalize_name(sub.name) in locked, f"{sub.name} (for {req}) missing from requirements.lock"


@pytest.mark.parametrize("python", ["3.11", "3.12", "3.13"])
def test_lock_covers_linux_on_each_supported_python(python):
    """One pin per package on x86-64 Linux for each supported Python; the same versions on all of
    them where possible, so the 3.12 and 3.13 installs match what CI tests on 3.11."""
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}
    pins = _pins(env)
    assert set(_declared()) <= set(pins)
    for name in ("torch", "torchvision", "numpy", "scipy", "pandas"):
        assert pins[name] == _pins({**env, "python_version": "3.11", "python_full_version": "3.11.0"})[name]
    assert SpecifierSet(_project()["requires-python"]).contains(f"{python}.0")


def test_lock_pins_the_build_backend_for_the_editable_install():
    """make installs covtl with --no-build-isolation, so the lock must carry setuptools."""
    tomlfile = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = _pins()
    for req in map(Requirement, tomlfile["build-system"]["requires"]):
        assert req.specifier.contains(pins[canonicalize_name(req.name)])


def _pip_config() -> dict[str, list[str]]:
    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        config.setdefault(key.split(".")[-1], []).extend(value.strip().strip("'\"").split())
    return config


def _local_wheels(config: dict[str, list[str]], name: str) -> set[str]:
    """Filenames of `name`'s wheels that pip can take from this machine's disk."""
    files = set()
    for location in config.get("find-links", []) + config.get("extra-index-url", []) + config.get("index-url", []):
        url = urlparse(location)
        path = Path(unquote(url.path)) if url.scheme in ("", "file") else None
        if path is None or not path.is_dir():
            continue
        files |= {p.name for p in path.glob("*.whl")}
        index = path / name / "index.html"
        if index.is_file():
            files |= set(re.findall(r">\s*([^<>\s]+\.whl)\s*<", index.read_text()))
    return {f for f in files if f.lower().startswith(name + "-") and _is_wheel_name(f)}


def _is_wheel_name(filename: str) -> bool:
    try:
        parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return True


def test_lock_takes_torch_from_this_machines_disk():
    """torch is pyproject's top version, the one on local disk: the lock must pin exactly that one,
    and satisfy the machine's pip constraints (which cap torch at it)."""
    pins, declared = _pins(), _declared()
    for name in ("torch", "torchvision"):
        caps = [s for s in declared[name].specifier if s.operator == "<="]
        assert len(caps) == 1, f"pyproject caps {name} at the version on local disk: {name}<=X, not {declared[name]}"
        assert pins[name] == Version(caps[0].version), f"lock has {name}=={pins[name]}, pyproject's top is {caps[0]}"
    config = _pip_config()
    for constraints in config.get("constraint", []):
        if Path(constraints).is_file():
            for line in Path(constraints).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line and not line.startswith("-"):
                    req = Requirement(line)
                    pin = pins.get(canonicalize_name(req.name))
                    assert pin is None or req.specifier.contains(pin), f"lock: {req.name}=={pin}; {constraints}: {req}"
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [w for w in _local_wheels(config, "torch") if tag in {t.interpreter for t in parse_wheel_filename(w)[3]}]
    if not wheels:
        pytest.skip(f"no torch wheel for {tag} on this machine's disk")
    assert pins["torch"] in {parse_wheel_filename(w)[1] for w in wheels}, sorted(wheels)


def test_make_installs_from_the_lock(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("no make here")
    out = subprocess.run(["make", "-n", f"{tmp_path}/venv/bin/.installed", f"VENV={tmp_path}/venv"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert re.search(r"pip install .*-r requirements\.lock", out.stdout), out.stdout
    assert re.search(r"pip install .*--no-deps .*-e \.", out.stdout), out.stdout


def test_environment_yml_installs_what_pyproject_declares():
    project = _project()
    pip = _declared()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda_names, conda = set(), {}
    # conda-forge packages, and the few it lacks under `pip:` (everything but the editable covtl)
    from_pip = [e for entry in env["dependencies"] if isinstance(entry, dict) for e in entry.get("pip", [])
                if not e.startswith("-")]
    for entry in [*env["dependencies"], *from_pip]:
        if isinstance(entry, str) and not entry.startswith(("python", "pip")):
            name, spec = _split(entry)
            conda_names.add(name)
            conda[CONDA_NAMES.get(name, name)] = SpecifierSet(spec)
    assert "pytorch" in conda_names and "torch" not in conda_names  # conda-forge's name for it
    assert set(conda) == set(pip)
    pins = _pins()
    for name, spec in conda.items():
        lower = {s for s in spec if s.operator in (">=", ">")}
        assert lower == {s for s in pip[name].specifier if s.operator in (">=", ">")}, f"{name}: {spec} vs {pip[name]}"
        upper = [s for s in spec if s.operator not in (">=", ">")]
        assert len(upper) == 1 and upper[0].operator == "<", f"{name}: cap it below a minor release: {spec}"
        assert re.fullmatch(r"\d+\.\d+", upper[0].version), f"{name}: a minor-version cap, not {upper[0]}"
        assert spec.contains(pins[name], prereleases=True), f"{name}: {spec} excludes the locked {pins[name]}"
    python = next(e for e in env["dependencies"] if isinstance(e, str) and e.startswith("python"))
    assert SpecifierSet(_split(python)[1]) == SpecifierSet(project["requires-python"])


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
