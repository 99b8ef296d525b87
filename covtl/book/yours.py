"""The book's "Your run" chapter: the reader's own study beside the papers, kept apart from the
headline results so that the two can never be mistaken for each other.

The table pages, the claims ledger and every other chapter show the headline results
(``$COVTL_RESULTS``: by default the recorded real-data study in ``results/cpu/``). A reader's own
run -- typically ``make study``'s quick run on the embedded synthetic data -- appears only here
(``$COVTL_YOURS``, set by ``covtl book --yours <profile>``), under its own banner and provenance,
table by table in the same form as the table pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from IPython.display import Markdown

from ..paper import TABLES
from .claims import claims, verdict_counts
from .page import Stack, Table, _provenance_text, synthetic_banner
from .results import complete_results, load_results, results_dir, yours_dir
from .tables import caption, comparison

__all__ = ["COMPARED_TABLES", "your_run"]

#: the tables whose page sets ours beside the paper's row by row (B1 and B2 describe the data and
#: the networks; the two figures are maps)
COMPARED_TABLES = tuple(t for t in TABLES if t not in ("B1", "B2"))


def _same_folder(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def your_run(root: str | Path | None = None, headline: str | Path | None = None) -> Stack:
    """The reader's own results (``root``, default :func:`yours_dir`) table by table: a banner
    saying what they are, their provenance, the verdict counts the ledger's rule gives them, and
    each table's rows beside the paper's. ``headline``: the folder the rest of the book shows
    (default :func:`results_dir`)."""
    root = Path(root) if root is not None else yours_dir()
    headline = Path(headline) if headline is not None else results_dir()
    if root is None:
        return Stack([Markdown(
            "**No run of yours is in this build.** `make study` runs the study at the `quick` profile on "
            "the embedded synthetic data and builds the book with that run in this chapter; after any "
            "`covtl study --profile <p>`, `covtl book --yours <p>` does the same.")])
    if _same_folder(root, headline):
        return Stack([Markdown(
            f"**Your run is this build's headline.** The results at `{root}` are the ones every table page "
            "and the claims ledger show, so there is nothing to repeat here.")])
    raw = load_results(root)
    if not (raw.root / "plan.json").is_file() or not (raw.root / "study.json").is_file():
        return Stack([Markdown(f"**No results at `{raw.root}`** (no `plan.json` or `study.json`): run "
                               f"`covtl study --profile {raw.root.name}` first, then rebuild the book.")])
    res = complete_results(root)
    parts: list[Any] = [synthetic_banner(res), Markdown(_provenance_text(raw))]
    ledger = claims(res)
    parts += [Markdown("**What the claims ledger's rule says of your run** (on synthetic data every line reads "
                       "*pipeline check*):" if res.synthetic else
                       "**What the claims ledger's rule says of your run:**"),
              Table(verdict_counts(ledger))]
    missing = []
    for table in COMPARED_TABLES:
        if not res.cells(table):
            missing.append(table)
            continue
        parts += [Markdown(f"**{table}.** {caption(table)}"), Table(comparison(table, res))]
    if missing:
        parts.append(Markdown(f"Tables with no finished row in your run: {', '.join(missing)}."))
    return Stack(parts)
