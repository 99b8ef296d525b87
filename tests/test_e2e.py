"""End to end: the whole study at the smoke profile on the embedded data, then the book.

This is what CI runs on every commit (numbers at the smoke profile mean nothing; the test is
that every stage, table and page works). The book is built with warnings as errors. The study
and the book are the session fixtures ``smoke_results`` and ``smoke_book`` (tests/conftest.py),
which the browser and teaching tests reuse.
"""

from __future__ import annotations

import json

import pytest

from covtl.study import build_plan


@pytest.mark.slow
def test_smoke_study_then_book(smoke_results, smoke_book):
    results = smoke_results
    study = json.loads((results / "smoke" / "study.json").read_text())
    assert study["runs"] == len(build_plan("smoke").runs) and study["synthetic"]
    for run_dir in (results / "smoke" / "runs").iterdir():
        assert json.loads((run_dir / "run.json").read_text())["status"] == "done", run_dir.name
        assert (run_dir / "metrics.json").is_file(), run_dir.name
    assert (smoke_book / "index.html").is_file()


@pytest.mark.slow
def test_the_default_book_leads_with_the_recorded_study_and_shows_your_run_apart(default_book):
    page = (default_book / "book" / "a2.html").read_text()
    assert "profile on real data" in page and "Synthetic data: these numbers test the pipeline" not in page
    yours = (default_book / "book" / "yours.html").read_text()
    assert "Synthetic data: these numbers test the pipeline" in yours and "smoke" in yours
    assert "(paper)" in yours  # the user's rows beside the paper's

