"""What the book's pages show, read from result files only.

Every number a page shows comes from a file a run wrote (``results/<profile>/...``: the plan,
each run's ``metrics.json`` and ``predictions.csv``), from the papers' numbers transcribed once
in ``book/data/paper_numbers.csv``, or from the code; nothing is typed into a page. Figures are
drawn by :mod:`covtl.plotting`; the compute model of the paper profile is :mod:`covtl.compute`.

- :mod:`covtl.book.results` -- the results folder (:class:`Results`, :func:`complete_results`);
- :mod:`covtl.book.evidence` -- a cell's value with its interval, on shared patient resamples;
- :mod:`covtl.book.claims` -- the claims ledger: :func:`claims` decides every verdict;
- :mod:`covtl.book.tables` -- ours beside the papers', table by table;
- :mod:`covtl.book.maps` -- the explanation pages' maps and scores;
- :mod:`covtl.book.datasets` -- the data chapter: inventory and split audit;
- :mod:`covtl.book.runs` -- rerun commands, wall times, provenance;
- :mod:`covtl.book.methods` -- the Methods chapter's tables, generated from the code;
- :mod:`covtl.book.page` -- what a cell displays: whole tables, provenance, :class:`TablePage`;
- :mod:`covtl.book.yours` -- the "Your run" chapter: the reader's own run, apart from the headline.
"""

from .claims import arms_of, claims, load_claims, paper_effect, verdict_counts
from .datasets import (
    audit_note,
    audit_table,
    conflicting_duplicates,
    data_inventory,
    dataset_inventory,
    regions_on_slices,
    split_statistics,
)
from .evidence import SCORES, Evidence, cell_value
from .maps import explain_figure, explained_networks, figure_maps, localisation_table
from .methods import (
    attention_placement,
    crnet_gap,
    plan_estimate,
    profiles_table,
    recipes_table,
    region_tuples,
    scale_limits,
    ssl_settings,
    stand_ins,
)
from .page import Stack, Table, TablePage, claims_by_statement, provenance_note, show
from .results import Results, complete_results, load_results, near_duplicate_test_images, results_dir, yours_dir
from .runs import environment_table, papermill_commands, provenance_table, stage_times, study_totals, wall_times
from .tables import (
    comparison,
    long_comparison,
    noncovid_positive,
    paper_notes,
    parameter_table,
    rank_correlations,
    scores_table,
    transferability_table,
    transferability_vs_gain,
)
from .yours import your_run

__all__ = [
    "SCORES", "Evidence", "Results", "Stack", "Table", "TablePage", "arms_of", "attention_placement", "audit_note",
    "audit_table", "cell_value", "claims", "claims_by_statement", "comparison", "complete_results",
    "conflicting_duplicates", "crnet_gap", "data_inventory", "dataset_inventory", "environment_table",
    "explain_figure", "explained_networks", "figure_maps", "load_claims", "load_results", "localisation_table",
    "long_comparison", "near_duplicate_test_images", "noncovid_positive", "paper_effect", "paper_notes",
    "papermill_commands", "parameter_table", "plan_estimate", "profiles_table", "provenance_note",
    "provenance_table", "rank_correlations", "recipes_table", "region_tuples", "regions_on_slices",
    "results_dir", "scale_limits", "scores_table", "show", "split_statistics", "stage_times", "ssl_settings",
    "stand_ins", "study_totals", "transferability_table", "transferability_vs_gain", "verdict_counts", "wall_times",
    "your_run", "yours_dir",
]
