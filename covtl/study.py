"""The study: the plan of runs every table needs (:mod:`covtl.plan`) and the cached runner that
executes it (:mod:`covtl.runner`), under one name.

``covtl study`` (:mod:`covtl.cli`) and most users need only :func:`build_plan`,
:func:`dry_run`, :func:`run_study` and :func:`emit_commands`; see the two modules for the rest.
"""

from __future__ import annotations

from .plan import (
    ATTN,
    B_ORDER,
    NOTEBOOKS,
    REPO,
    TRAINING_STAGES,
    Cell,
    DryRun,
    Plan,
    Run,
    build_plan,
    check_run,
    dry_run,
    parameter_counts,
    select,
)
from .runner import (
    ENGINE_MODULES,
    EXECUTORS,
    SlurmOptions,
    Study,
    StudyRunError,
    _source_hash,
    checkpoints_to_rebuild,
    default_jobs,
    emit_commands,
    run_key,
    run_study,
    schedule,
)

__all__ = ["ATTN", "B_ORDER", "ENGINE_MODULES", "EXECUTORS", "NOTEBOOKS", "REPO", "TRAINING_STAGES", "Cell",
           "DryRun", "Plan", "Run", "SlurmOptions", "Study", "StudyRunError", "_source_hash", "build_plan",
           "check_run", "checkpoints_to_rebuild", "default_jobs", "dry_run", "emit_commands", "parameter_counts",
           "run_key", "run_study", "schedule", "select"]
