"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: real datasets for development and CI (never part of the repository); override with COVTL_SHARED_DATA
SHARED_DATA = Path(os.environ.get("COVTL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; the test is skipped when it is absent (e.g. on a fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    """The whole study at the smoke profile, run once per test session: the ``--results`` folder
    (``<it>/smoke/`` holds plan.json, study.json and runs/). Shared by the end-to-end, book,
    browser and teaching tests, since it is the slowest thing the suite does.

    ``COVTL_SMOKE_RESULTS=<folder>`` uses a finished smoke study instead (to iterate on the
    tests that read it)."""
    from covtl.cli import main

    if os.environ.get("COVTL_SMOKE_RESULTS"):
        return Path(os.environ["COVTL_SMOKE_RESULTS"])
    results = tmp_path_factory.mktemp("smoke-study") / "results"
    assert main(["study", "--profile", "smoke", "--results", str(results)]) == 0
    return results


@pytest.fixture(scope="session")
def smoke_book(smoke_results) -> Path:
    """The book built (``covtl book``, warnings as errors) from :func:`smoke_results`: its html folder.

    ``COVTL_SMOKE_BOOK=<html folder>`` uses a book already built from smoke results instead."""
    from covtl.cli import main

    if os.environ.get("COVTL_SMOKE_BOOK"):
        return Path(os.environ["COVTL_SMOKE_BOOK"])
    assert main(["book", "--profile", "smoke", "--results", str(smoke_results)]) == 0
    return ROOT / "_build" / "html"


@pytest.fixture(scope="session")
def default_book(smoke_results, tmp_path_factory) -> Path:
    """The book as ``make study`` builds it: the recorded real-data study (``results/cpu/``,
    committed) as the headline and the session's smoke study as "your run"; its html folder
    (built apart from :func:`smoke_book`'s)."""
    from covtl.cli import main

    work = tmp_path_factory.mktemp("default-book")
    results = work / "results"
    results.mkdir()
    (results / "cpu").symlink_to(ROOT / "results" / "cpu", target_is_directory=True)
    (results / "smoke").symlink_to(smoke_results / "smoke", target_is_directory=True)
    assert main(["book", "--results", str(results), "--yours", "smoke", "--out", str(work)]) == 0
    return work / "_build" / "html"

