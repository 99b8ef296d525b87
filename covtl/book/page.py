"""Page helpers: what a cell of the book displays.

- :class:`Table` / :func:`show` -- a data frame shown whole: every row, every column, every
  character (pandas' notebook display cuts long text to 50 characters and long frames to 60
  rows), sideways scrolling where it is wider than the page;
- :class:`Stack` -- several outputs of one cell, one after the other;
- :func:`provenance_note` -- where a page's numbers come from (and a warning on synthetic data);
- :class:`TablePage` -- one paper table's page: caption and provenance, ours beside the paper's,
  the figure, the claims ledger's lines, the rows not run and the transcription notes;
- :func:`claims_by_statement` -- the claims ledger grouped by the paper's sentence.

Only the *expected* absence of results (no ``plan.json`` yet, a run not finished) is turned
into a note; anything else raises, so a broken page fails the book build.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import HTML, Markdown, display
from matplotlib.figure import Figure

from ..plotting import paper_vs_ours
from .claims import NOT_YET_RUN, claims
from .results import Results, complete_results, load_results, profile_guess
from .runs import papermill_commands
from .tables import caption, comparison, long_comparison, paper_notes, paper_only

__all__ = ["Stack", "Table", "TablePage", "claims_by_statement", "interval_note", "not_yet_run", "provenance_note",
           "show", "synthetic_banner"]


# ---------------------------------------------------------------------------- display

#: row labels (a model, a claim id) stay on one line; column titles and long text wrap
TABLE_CSS = ".covtl-table tbody th {white-space: nowrap;}"


def _p_value(x: float) -> str:
    return "" if pd.isna(x) else f"{x:.3f}"


class Table:
    """A data frame shown whole, as pandas' own HTML table (the theme styles it), in a box that
    scrolls sideways when the table is wider than the page.

    ``index``: show the index; ``precision``: digits of every float column (default: pandas'
    display); ``formats``: column -> function from value to text; ``na_rep``: what a missing
    value shows (default: nothing); ``widths``: column -> minimum width (CSS, e.g. ``"14em"``)
    of a text column that would otherwise be squeezed into a narrow one.
    """

    def __init__(self, data: pd.DataFrame, *, index: bool = True, precision: int | None = None,
                 formats: Mapping[str, Callable[[Any], str]] | None = None, na_rep: str = "",
                 widths: Mapping[str, str] | None = None):
        self.data, self.index, self.precision, self.formats = data, index, precision, dict(formats or {})
        self.na_rep, self.widths = na_rep, dict(widths or {})

    def _frame(self) -> pd.DataFrame:
        df = self.data.copy()
        for col in df.columns:  # nullable integers print <NA>; a blank reads better
            if isinstance(df[col].dtype, pd.api.extensions.ExtensionDtype) and df[col].isna().any():
                df[col] = df[col].astype(object).where(df[col].notna(), self.na_rep)
        return df

    def _repr_html_(self) -> str:
        float_format = f"{{:.{self.precision}f}}".format if self.precision is not None else None
        table = self._frame().to_html(index=self.index, na_rep=self.na_rep, float_format=float_format,
                                      formatters=self.formats or None, col_space=self.widths or None)
        return (f"<style>{TABLE_CSS}</style>"
                f'<div class="covtl-table" style="overflow-x: auto; max-width: 100%; font-size: 0.9em;">{table}</div>')

    def __repr__(self) -> str:
        return self._frame().to_string(index=self.index)


def show(obj: Any, **kwargs) -> Any:
    """``obj`` ready for a cell's last line: a data frame as a whole :class:`Table`, anything else as it is."""
    return Table(obj, **kwargs) if isinstance(obj, pd.DataFrame) else obj


class Stack:
    """Outputs of one cell shown one after the other (``None`` parts are skipped)."""

    def __init__(self, parts: Iterable[Any]):
        self.parts = [p for p in parts if p is not None]

    def _ipython_display_(self) -> None:
        for part in self.parts:
            display(part)


# ---------------------------------------------------------------------------- provenance


def not_yet_run(root: str | Path | None = None, what: str = "this page") -> str:
    """Markdown: no study results were found, and how to produce them."""
    raw = load_results(root)
    profile = profile_guess(raw.root)
    return (f"**Not yet run.** There are no study results at `{raw.root}` (no `plan.json`), so {what} "
            f"shows the papers' numbers only. Run `covtl study --profile {profile}` and rebuild the book "
            "(`covtl book`), or point `COVTL_RESULTS` at a results folder.")


def synthetic_banner(res: Results | None) -> HTML | None:
    """An unmistakable warning when the results come from synthetic data; else ``None``."""
    if res is None or not res.synthetic:
        return None
    return HTML(
        '<div class="admonition warning" style="font-size:1.1em"><p class="admonition-title">'
        "Synthetic data: these numbers test the pipeline, not the papers</p><p>Every number on this page "
        f"comes from the <b>{res.profile}</b> profile, trained on covtl's embedded <b>synthetic</b> CT images "
        "with small stand-in networks. They show that the code runs end to end; they say nothing about "
        "COVID-19 CT or about the papers' claims, and the claims ledger reads <i>pipeline check</i> for "
        "all of them.</p></div>")


def interval_note(res: Results) -> str:
    """Markdown: which sources of variance the intervals of these results cover."""
    seeds = max((len(c["runs"]) for c in res.plan["cells"] if c["table"] not in ("B1", "A6")), default=1)
    pretrain = int(res.plan.get("pretrain_seeds", 1))
    if seeds == 1:
        covered = ("the test sample only (one seed: patients resampled, the training run taken as given)")
    elif pretrain >= seeds:
        covered = (f"both the {seeds} seeds (each repeating its whole chain, pretraining included) and the test "
                   "sample (seeds resampled, then patients)")
    else:
        covered = (f"the {seeds} fine-tuning seeds and the test sample (seeds resampled, then patients); the "
                   "pretraining stages ran once, so their own run-to-run variation is not in the intervals")
    return f"Intervals are 95% hierarchical-bootstrap intervals covering {covered}."


def _stand_in_note(res: Results) -> str:
    if res.profile == "paper":
        return ""
    if res.profile == "cpu":
        return (" The cpu profile runs at reduced scale (smaller stand-in networks, images and epochs than the "
                "papers'; the column *network run* names the network that ran): compare directions and sizes "
                "of effects with the papers', not single digits.")
    return (f" At the {res.profile} profile small stand-in networks replace the papers' (the column "
            "*network run* names the one that ran), and the numbers test the pipeline, not the papers.")


def _provenance_text(raw: Results) -> str:
    return raw.provenance_line() + _stand_in_note(raw) + " " + interval_note(raw)


def provenance_note(root: str | Path | None = None) -> Stack | Markdown:
    """The provenance line of the current results, after :func:`synthetic_banner` on synthetic
    results; the "not yet run" note without results."""
    raw = load_results(root)
    if not (raw.root / "plan.json").is_file() or not (raw.root / "study.json").is_file():
        return Markdown(not_yet_run(root))
    return Stack([synthetic_banner(raw), Markdown(_provenance_text(raw))])


# ---------------------------------------------------------------------------- claims


def _is_not_run(verdict: str) -> bool:
    return verdict == NOT_YET_RUN or verdict.startswith("not run at")


def _id_ranges(ids: Sequence[str]) -> str:
    """``A3-07, A3-08, A3-09, A3-12`` -> ``A3-07 to A3-09, A3-12`` (runs of consecutive numbers)."""
    parsed = [(m.group(1), int(m.group(2)), len(m.group(2))) if (m := re.fullmatch(r"(.*?)(\d+)", i)) else (i, None, 0)
              for i in ids]
    out, start = [], 0
    for k in range(1, len(ids) + 1):
        prefix, n, _ = parsed[k - 1]
        if k < len(ids) and n is not None and parsed[k][0] == prefix and parsed[k][1] == n + 1:
            continue
        out.append(ids[start] if start == k - 1 else f"{ids[start]} to {ids[k - 1]}")
        start = k
    return ", ".join(out)


def _not_run_line(lines: pd.DataFrame) -> Markdown | None:
    """One line for every ledger line without runs to read: the verdict, how many, which."""
    lines = lines[lines.verdict.map(_is_not_run)]
    if lines.empty:
        return None
    parts = [f"*{verdict}*: " + "; ".join(f"{_id_ranges(list(g.claim))}{f' ({note})' if note else ''}"
                                        for note, g in group.groupby("note", sort=False))
             for verdict, group in lines.groupby("verdict", sort=False)]
    return Markdown(f"Lines with no runs to read ({len(lines)}): " + "; ".join(parts) + ".")


#: the columns of a table's ledger lines, as its page and the ledger page show them
LINE_COLUMNS = ["claimed", "metric", "paper effect", "ours [95% interval]", "MDE", "p", "p (Holm)", "q (BH)",
                "verdict", "note"]
P_FORMATS = {"p": _p_value, "p (Holm)": _p_value, "q (BH)": _p_value}


def _lines_table(lines: pd.DataFrame) -> Table | None:
    """The ledger lines that were read (tested, or refused a verdict for a stated reason)."""
    read = lines[~lines.verdict.map(_is_not_run)]
    if read.empty:
        return None
    return Table(read.set_index("claim")[LINE_COLUMNS], formats=P_FORMATS,
                 widths={"claimed": "16em", "verdict": "8em", "note": "16em"})


def claims_by_statement(ledger: pd.DataFrame) -> Stack:
    """The ledger grouped by the paper's sentence: the quotation once, then its lines, the lines
    without runs collapsed into one."""
    parts: list[Any] = []
    for statement, lines in ledger.groupby("statement", sort=False):
        kinds = ", ".join(dict.fromkeys(lines.kind))
        tables = ", ".join(dict.fromkeys(lines.table))
        quote = html.escape(statement, quote=False).replace("*", r"\*").replace("_", r"\_")
        parts.append(Markdown(f"**{tables}** ({kinds}; {_id_ranges(list(lines.claim))})\n\n> {quote}"))
        parts += [_lines_table(lines), _not_run_line(lines)]
    return Stack(parts)


# ---------------------------------------------------------------------------- a paper table's page


class TablePage:
    """One paper table's page: every method returns something a notebook cell displays.

    ``TablePage("A2")`` reads ``$COVTL_RESULTS`` (see :func:`covtl.book.results_dir`). Cells whose
    runs have not finished are left out of the tables and listed in :meth:`header`.
    """

    def __init__(self, table: str, root: str | Path | None = None):
        self.table = table
        self.raw = load_results(root)
        self.res = complete_results(root)

    # ------------------------------------------------------------------ text
    def header(self, cells: bool = True) -> Stack:
        """Caption, provenance, and (``cells``) which rows are missing."""
        lines = [f"**Paper's caption.** {caption(self.table)}", ""]
        if self.res is None:
            lines.append(not_yet_run(self.raw.root))
            return Stack([Markdown("\n".join(lines))])
        lines.append(_provenance_text(self.raw))
        planned = self.raw.cells(self.table)
        pending = [c for c in planned if c not in self.res.cells(self.table)]
        if cells and not planned:
            lines += ["", f"**No row of this table is run at the {self.res.profile} profile** (see *Rows not "
                          "run* below); the page shows the paper's numbers only."]
        if cells and pending:
            names = ", ".join(f"{c['model']} ({c['setting']})" for c in pending)
            lines += ["", f"**Not yet run:** {len(pending)} of {len(planned)} rows have unfinished runs and are "
                          f"left out: {names}."]
        return Stack([synthetic_banner(self.res), Markdown("\n".join(lines))])

    # ------------------------------------------------------------------ tables
    def comparison(self, which: str = "best_val", without_near_duplicates: bool = False) -> Table:
        """The paper's value beside ours (mean [95% interval]) per row; ``which``: best_val or last;
        ``without_near_duplicates``: the test images with a near-duplicate in the training split left out."""
        if self.res is None or not self.res.cells(self.table):
            return Table(paper_only(self.table))
        return Table(comparison(self.table, self.res, which, without_near_duplicates))

    def tests(self) -> Stack:
        """The claims ledger's lines of this table: each claimed comparison, all seeds together; the
        lines without runs to read in one line."""
        led = claims(self.res)
        lines = led[led.table == self.table]
        if lines.empty:
            return Stack([Markdown("No claim of the paper's text rests on this table alone.")])
        return Stack([_lines_table(lines), _not_run_line(lines)])

    def not_run(self) -> Markdown:
        """The rows of the paper that this profile skips, and why, in one line."""
        if self.res is None:
            from ..study import build_plan

            rows = [n for n in build_plan(profile_guess(self.raw.root)).not_run if n["table"] == self.table]
        else:
            rows = self.res.not_run(self.table)
        if not rows:
            return Markdown("Every row of the paper's table is run at this profile.")
        by_reason: dict[str, list[str]] = {}
        for n in rows:
            by_reason.setdefault(n["why"], []).append(n["model"])
        return Markdown("; ".join(f"{', '.join(dict.fromkeys(models))}: {why}" for why, models in by_reason.items())
                        + ".")

    def notes(self) -> Table | Markdown:
        """The transcription notes of the paper's numbers (:func:`covtl.book.paper_notes`), or a line
        saying there are none."""
        notes = paper_notes(self.table)
        if notes.empty:
            return Markdown("Nothing needed interpreting: the numbers are as printed.")
        return Table(notes, index=False)

    def data(self, which: str = "best_val") -> pd.DataFrame:
        """:func:`covtl.book.long_comparison` of this table (the paper's rows only while nothing has run)."""
        has_rows = self.res is not None and bool(self.res.cells(self.table))
        return long_comparison(self.table, self.res if has_rows else None, which)

    def figure(self, which: str = "best_val") -> Figure:
        """:func:`covtl.plotting.paper_vs_ours` of this table."""
        return paper_vs_ours(self.data(which))

    def histories(self, model: str | None = None, setting: str | None = None) -> dict[str, list]:
        """Training histories (seed 0) of the table's rows, label -> per-epoch records."""
        if self.res is None:
            return {}
        return {f"{c['model']}, {c['setting']}": self.res.record(c["runs"][0]).get("history", [])
                for c in self.res.cells(self.table)
                if (model is None or c["model"] == model) and (setting is None or c["setting"] == setting)}

    def commands(self) -> Table:
        """The papermill command that reruns seed 0 of each row (:func:`covtl.book.papermill_commands`)."""
        return Table(papermill_commands(self.res, self.table))

