"""The study runner: a plan's runs executed with papermill, cached, resumable, on one of three executors.

:func:`run_study` executes the runs of a plan (:mod:`covtl.plan`) into
``results/<profile>/runs/<run id>/`` (the executed notebook, ``metrics.json``, ``run.json``,
checkpoints) and skips a run whose inputs are unchanged: its key (:func:`run_key`) hashes the
notebook, the parameters, the upstream run's key, the data fingerprint and the engine's source
(:data:`ENGINE_MODULES`). An interrupted run resumes from its last checkpoint; a failing notebook
stops the study with an error naming the run and the cell, and every finished run stays as it
is. A finished run whose checkpoint a later run needs, and which is gone, is run again.

Executors (``executor=``):

- ``"pool"`` (default): ``jobs`` workers on this machine, each with a warm kernel
  (:mod:`covtl.kernels`), one GPU each where there are several;
- ``"local"``: submitit's local executor, one process per run (what ``"slurm"`` does, on this machine);
- ``"slurm"``: one SLURM job per run through submitit, submitted upstream first with
  ``afterok`` dependencies; the command waits for the jobs and then writes the study's records.

Every executor goes through the same preparation (:class:`Study`), so caching and resuming work
the same whichever ran a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import write_json_atomic
from .plan import NOTEBOOKS, REPO, Plan, Run, _notebook, build_plan, parameter_counts, select
from .provenance import provenance

__all__ = ["ENGINE_MODULES", "EXECUTORS", "Study", "StudyRunError", "checkpoints_to_rebuild", "default_jobs",
           "emit_commands", "run_key", "run_study", "schedule"]

log = logging.getLogger("covtl.study")

#: where runs execute: a pool of warm kernels here, submitit's local executor, or SLURM via submitit
EXECUTORS = ("pool", "local", "slurm")


class StudyRunError(RuntimeError):
    """A run of the study failed; finished runs are kept."""


#: what runs inside the stages (covtl's top-level modules and packages): a run's key hashes these
#: files, so changing them re-runs the study; everything else in covtl (the book, plotting, the
#: ledger, the planner, runner and CLI) presents or schedules results and can change freely.
#: tests/test_study.py checks that every covtl module a stage imports is listed here.
ENGINE_MODULES = ("__init__.py", "data", "models", "explain.py", "io.py", "losses.py", "metrics.py", "profiles.py",
          "provenance.py", "recipes.py", "regions.py", "ssl.py", "stages.py", "train.py", "transferability.py")


def _in_engine(path: Path) -> bool:
    return path.relative_to(REPO / "covtl").parts[0] in ENGINE_MODULES


def _source_hash() -> str:
    """Hash of the covtl code that runs inside the stages (:data:`ENGINE_MODULES`)."""
    h = hashlib.sha256()
    for p in sorted((REPO / "covtl").rglob("*.py")):
        if not _in_engine(p):
            continue
        h.update(p.relative_to(REPO).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run_key(run: Run, keys: dict[str, str], data_fp: str, code: str, profile: str) -> str:
    nb = (NOTEBOOKS / f"{run.notebook}.py").read_bytes()
    parts = [profile, run.notebook, hashlib.sha256(nb).hexdigest(), json.dumps(run.params),
             keys[run.upstream.id] if run.upstream else run.init, data_fp, code]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def _execute(run: Run, out: Path, params: dict[str, Any], kernels=None, log_output: bool = False) -> None:
    """Run the notebook with papermill: in ``kernels``' warm kernel (see covtl.kernels) or a fresh one.

    ``log_output``: stream the notebook's output (its per-epoch lines) to the ``papermill`` logger.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .kernels import ENGINE, register_engine

    engine: dict[str, Any] = {}
    if kernels is not None:
        register_engine()
        engine = {"engine_name": ENGINE, "km": kernels.get()}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"{run.notebook}.ipynb"
        nbformat.write(_notebook(run.notebook), src)
        try:
            papermill.execute_notebook(
                str(src), str(out / "notebook.ipynb"), parameters=params, kernel_name="python3",
                progress_bar=False, log_output=log_output, cwd=str(REPO), **engine,
            )
        except PapermillExecutionError as err:
            raise StudyRunError(
                f"run {run.id} (notebooks/{run.notebook}.py) failed in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}. The executed notebook is {out / 'notebook.ipynb'}; "
                "finished runs are kept -- fix the cause and rerun the same command to continue."
            ) from None


def _finished(run: Run, key: str, out_root: Path) -> bool:
    """A finished run with this key exists (its ``run.json`` says so)."""
    record_path = out_root / "runs" / run.id / "run.json"
    if not record_path.is_file():
        return False
    record = json.loads(record_path.read_text())
    return record.get("key") == key and record.get("status") == "done"


def checkpoints_to_rebuild(runs: list[Run], keys: dict[str, str], out_root: Path) -> set[str]:
    """Finished runs to run again because a run that will execute needs their missing ``last.pt``.

    Result files are committed without checkpoints (a clone of the recorded study has none), so
    a run that must still execute may find its upstream finished but its checkpoint gone. The
    upstream run is then recomputed: deterministically on a CPU with the same thread count (see
    the book's reproducibility page), and its own upstream in turn if that checkpoint is gone too.
    """
    rebuild: set[str] = set()
    for run in reversed(runs):  # the plan lists upstream runs first: walk downstream first
        executes = run.id in rebuild or not _finished(run, keys[run.id], out_root)
        up = run.upstream
        if (executes and up is not None and not (out_root / "runs" / up.id / "last.pt").is_file()
                and _finished(up, keys[up.id], out_root)):  # an unfinished upstream run runs anyway
            rebuild.add(up.id)
    return rebuild


def _prepare(run: Run, key: str, out_root: Path, profile: str, data_root: str | None,
             rebuild: bool = False) -> dict[str, Any] | None:
    """The run's notebook parameters, or ``None`` when a finished run with this key exists.

    ``rebuild``: run a finished run again (its checkpoint is needed and gone); its old files are
    moved to ``<id>.before-rebuild/`` until the new run has finished (:func:`_rebuilt`).
    """
    out = out_root / "runs" / run.id
    record_path = out / "run.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record and record.get("key") == key and record.get("status") == "done":
        if not rebuild:
            return None
        backup = out.with_name(f"{run.id}.before-rebuild")
        if backup.exists():
            shutil.rmtree(backup)
        out.rename(backup)
        record = None
    if record and record.get("key") != key and out.exists():
        shutil.rmtree(out)  # inputs changed: start this run afresh
    out.mkdir(parents=True, exist_ok=True)
    params = _run_params(run, out_root, profile, data_root)
    # an interrupted run keeps its folder: the engine resumes from its last checkpoint
    write_json_atomic(record_path, {"id": run.id, "key": key, "status": "running", "notebook": run.notebook,
                                    "params": params})
    return params


def _rebuilt(run: Run, out_root: Path) -> str:
    """After a rebuild: drop the old files, saying whether the test metrics came out the same."""
    out = out_root / "runs" / run.id
    backup = out.with_name(f"{run.id}.before-rebuild")
    if not backup.exists():
        return ""
    old, new = (json.loads(p.read_text()).get("test") if p.is_file() else None
                for p in (backup / "metrics.json", out / "metrics.json"))
    shutil.rmtree(backup)
    if old == new:
        return " (checkpoint rebuilt; the same test metrics as recorded)"
    return (" (checkpoint rebuilt; its test metrics differ from the recorded ones: another thread count, "
            "device or package set -- downstream runs start from the new checkpoint)")


def _run_params(run: Run, out_root: Path, profile: str, data_root: str | None) -> dict[str, Any]:
    """The notebook parameters of ``run`` in the study folder ``out_root``."""
    params = {**dict(run.params), "profile": profile, "data_root": data_root or "",
              "out_dir": str(out_root / "runs" / run.id)}
    if run.upstream is not None:
        params["init"] = str(out_root / "runs" / run.upstream.id / "last.pt")
    elif run.init:
        params["init"] = run.init
    return params


def emit_commands(profile: str, results: Path = REPO / "results", data_root: str | None = None,
                  only: list[str] | None = None) -> list[str]:
    """One shell command per run of the plan, upstream runs first, for another scheduler.

    Each line makes the run's folder and executes its notebook with papermill, writing where
    ``covtl study`` would (``results/<profile>/runs/<id>/``); string parameters go with ``-r``
    (raw), the others with ``-p``. Run them from the repository root after
    ``jupytext --to ipynb notebooks/*.py``; a run may start once its upstream run (whose
    ``last.pt`` is its ``init``) has finished. Unlike ``covtl study`` they do not skip
    finished runs nor write ``run.json`` records.
    """
    import shlex

    out_root = Path(results) / profile
    lines = []
    for run in select(build_plan(profile), only).runs:
        params = _run_params(run, out_root, profile, data_root)
        args = " ".join(f"{'-r' if isinstance(v, str) else '-p'} {k} {shlex.quote(str(v))}"
                        for k, v in params.items())
        out = shlex.quote(params["out_dir"])
        lines.append(f"mkdir -p {out} && papermill notebooks/{run.notebook}.ipynb {out}/notebook.ipynb "
                     f"--cwd . {args}")
    return lines


def default_jobs() -> int:
    """Notebooks run side by side: 2 on a CPU-only machine with 2+ cores, else 1 (one GPU)."""
    import os

    import torch

    return 1 if torch.cuda.is_available() else max(1, min(2, os.cpu_count() or 1))


@dataclass(frozen=True)
class Study:
    """What executing a run needs, fixed before the first run starts (picklable: submitit ships it)."""

    profile: str
    out_root: Path  # results/<profile>
    data_root: str  # as given; "" = the embedded synthetic data
    root: str  # the data root resolved
    data_fp: str
    keys: dict[str, str] = field(default_factory=dict)  # run id -> key
    rebuild: frozenset[str] = frozenset()  # finished runs to run again (their checkpoint is needed)
    log_output: bool = False

    @classmethod
    def prepare(cls, plan: Plan, results: Path, data_root: str | None, log_output: bool = False) -> Study:
        from .stages import data_fingerprint, resolve_data_root

        root = resolve_data_root(data_root or "")
        data_fp, code = data_fingerprint(root), _source_hash()
        keys: dict[str, str] = {}
        for run in plan.runs:  # upstream first, so the upstream key is known
            keys[run.id] = run_key(run, keys, data_fp, code, plan.profile)
        out_root = Path(results) / plan.profile
        rebuild = frozenset(checkpoints_to_rebuild(plan.runs, keys, out_root))
        if rebuild:
            log.info("%d finished run(s) run again: later runs need their checkpoints, which are gone (%s)",
                     len(rebuild), ", ".join(sorted(rebuild)))
        return cls(plan.profile, out_root, data_root or "", str(root), data_fp, keys, rebuild, log_output)

    def params(self, run: Run) -> dict[str, Any] | None:
        """The run's notebook parameters, or ``None`` when it finished with this key (skip it)."""
        return _prepare(run, self.keys[run.id], self.out_root, self.profile, self.data_root, run.id in self.rebuild)

    def execute(self, run: Run, params: dict[str, Any], kernels=None) -> float:
        """Execute the run's notebook and record it as done; its wall time in seconds."""
        t0 = time.perf_counter()
        _execute(run, self.out_root / "runs" / run.id, params, kernels, self.log_output)
        took = time.perf_counter() - t0
        write_json_atomic(self.out_root / "runs" / run.id / "run.json", {
            "id": run.id, "key": self.keys[run.id], "status": "done", "notebook": run.notebook, "params": params,
            "wall_time_s": round(took, 2),
            "provenance": provenance(profile=self.profile, data=self.root, data_fingerprint=self.data_fp),
        })
        return took


def schedule(runs: list[Run], study: Study, submit: Callable[[Run, dict[str, Any]], Future], jobs: int) -> dict:
    """Start each run once its upstream run has finished, at most ``jobs`` at once; ``{"ran", "skipped"}``.

    ``submit(run, params)`` starts one run and returns a future of its wall time. On the first
    failure no new run starts, the running ones finish, and the failure is raised.
    """
    counts = {"ran": 0, "skipped": 0}
    done: set[str] = set()
    pending = list(runs)
    running: dict[Future, Run] = {}
    failure: BaseException | None = None
    while pending or running:
        ready = [r for r in pending if r.upstream is None or r.upstream.id in done]
        for run in ready if failure is None else []:
            if len(running) >= jobs:
                break
            pending.remove(run)
            params = study.params(run)
            if params is None:
                counts["skipped"] += 1
                done.add(run.id)
                continue
            log.info("[%d/%d] %s ...", len(done) + len(running) + 1, len(runs), run.id)
            running[submit(run, params)] = run
        if not running:
            if failure is not None or not pending:
                break
            if not ready:  # cannot happen for a plan built upstream-first
                raise RuntimeError(f"runs wait for upstream runs that never ran: {[r.id for r in pending]}")
            continue
        finished, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in finished:
            run = running.pop(fut)
            try:
                took = fut.result()
            except BaseException as err:  # stop scheduling; report after the others finish
                failure = failure or err
                continue
            done.add(run.id)
            counts["ran"] += 1
            log.info("[%d/%d] %s done in %.1f s%s", len(done), len(runs), run.id, took, _rebuilt(run, study.out_root))
    if failure is not None:
        raise failure
    return counts


def _run_pool(runs: list[Run], study: Study, jobs: int, warm_kernels: bool) -> dict:
    """The default executor: ``jobs`` workers here, warm kernels, one GPU per worker where there are several."""
    from .kernels import WarmKernels, visible_gpus, worker_env

    # several workers on several GPUs: worker i sees only GPU i mod n_gpus (its kernel's env)
    gpus = visible_gpus() if jobs > 1 else []
    kernel_env = None
    if gpus:
        log.info("%d workers on GPU(s) %s: worker i uses GPU i mod %d", jobs, ",".join(gpus), len(gpus))

        def kernel_env(worker: int) -> dict[str, str]:
            return {**worker_env(worker, gpus), "COVTL_JOBS": str(jobs)}

    kernels = (WarmKernels(cwd=str(REPO), env=kernel_env, reuse=warm_kernels)
               if warm_kernels or kernel_env is not None else None)
    # exits in reverse order: on Ctrl-C the kernels die first, so the pool does not wait for them
    with ThreadPoolExecutor(max_workers=jobs) as pool, kernels or nullcontext():
        return schedule(runs, study, lambda run, params: pool.submit(study.execute, run, params, kernels), jobs)


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each run's SLURM job (``covtl study --executor slurm --slurm-...``)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus: int = 1
    cpus: int = 8
    mem_gb: int = 32
    account: str | None = None

    def parameters(self) -> dict[str, Any]:
        p: dict[str, Any] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus, "cpus_per_task": self.cpus,
                             "mem_gb": self.mem_gb, "nodes": 1, "tasks_per_node": 1}
        if self.partition:
            p["slurm_partition"] = self.partition
        if self.account:
            p["slurm_account"] = self.account
        return p


def submitit_executor(kind: str, folder: Path, jobs: int, slurm: SlurmOptions | None = None):
    """submitit's executor for ``kind`` ("local" or "slurm"), logging under ``folder``."""
    try:
        import submitit
    except ImportError:
        raise StudyRunError(f"--executor {kind} needs submitit: pip install 'covtl[cluster]' "
                            "(or pip install submitit)") from None
    if kind == "local":
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(timeout_min=24 * 60, gpus_per_node=0, cpus_per_task=max(1, (os.cpu_count() or 1)
                                                                                                // jobs))
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(**(slurm or SlurmOptions()).parameters())
    return executor


def _job_failed(run: Run, job, err: BaseException) -> StudyRunError:
    paths = getattr(job, "paths", None)
    where = f"; its log: {paths.stderr}" if paths is not None else ""
    first = str(err).strip().splitlines()
    reason = next((line for line in reversed(first) if "StudyRunError" in line or "Error" in line), first[-1]
                  if first else repr(err))
    return StudyRunError(f"run {run.id} (job {job.job_id}) failed: {reason.strip()}{where}. Finished runs are kept "
                         "-- fix the cause and rerun the same command to continue.")


def _run_submitit_local(runs: list[Run], study: Study, jobs: int, executor) -> dict:
    """One local process per run, started when its upstream run has finished (no queue dependencies here)."""
    with ThreadPoolExecutor(max_workers=jobs) as waiter:
        def submit(run: Run, params: dict[str, Any]) -> Future:
            job = executor.submit(study.execute, run, params)

            def result() -> float:
                try:
                    return job.result()
                except Exception as err:
                    raise _job_failed(run, job, err) from None
            return waiter.submit(result)
        return schedule(runs, study, submit, jobs)


def _run_slurm(runs: list[Run], study: Study, executor) -> dict:
    """Every run as a SLURM job, submitted upstream first with ``afterok`` dependencies; wait for all."""
    counts = {"ran": 0, "skipped": 0}
    submitted: list[tuple[Run, Any]] = []
    job_of: dict[str, Any] = {}
    for run in runs:  # upstream first: an upstream job id is known when its downstream job is submitted
        params = study.params(run)
        if params is None:
            counts["skipped"] += 1
            continue
        upstream = job_of.get(run.upstream.id) if run.upstream else None
        executor.update_parameters(slurm_additional_parameters=(
            {"dependency": f"afterok:{upstream.job_id}", "kill-on-invalid-dep": "yes"} if upstream else {}))
        job = executor.submit(study.execute, run, params)
        job_of[run.id] = job
        submitted.append((run, job))
        log.info("submitted %s as job %s%s", run.id, job.job_id,
                 f" (after job {upstream.job_id})" if upstream else "")
    for i, (run, job) in enumerate(submitted):
        try:
            took = job.result()
        except Exception as err:
            for _, later in submitted[i + 1:]:  # their dependencies can no longer be satisfied
                later.cancel(check=False)
            raise _job_failed(run, job, err) from None
        counts["ran"] += 1
        log.info("[%d/%d] %s done in %.1f s (job %s)%s", counts["ran"], len(submitted), run.id, took, job.job_id,
                 _rebuilt(run, study.out_root))
    return counts


def run_study(
    profile: str,
    results: Path = REPO / "results",
    data_root: str | None = None,
    only: list[str] | None = None,
    jobs: int | None = None,
    warm_kernels: bool = True,
    executor: str = "pool",
    slurm: SlurmOptions | None = None,
    log_output: bool = False,
) -> Path:
    """Run (or reuse) every run the plan needs; return ``results/<profile>``.

    ``jobs`` runs at once (default :func:`default_jobs`; with ``executor="slurm"`` the queue
    decides); on a CPU each gets ``OMP_NUM_THREADS = cores // jobs`` threads so they do not fight
    over the cores. A run starts once its upstream run has finished. On the first failure no new
    run starts, the running ones finish, and :class:`StudyRunError` names the failed run and cell.
    With ``warm_kernels`` each pool worker reuses one kernel across its notebooks
    (:mod:`covtl.kernels`), which saves the kernel start and imports (~5 s) per run without
    changing results. With ``jobs > 1`` on a machine with CUDA devices, pool worker ``i`` runs on
    GPU ``i mod n_gpus``. ``log_output`` streams each notebook's output (a line per epoch).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    plan = select(build_plan(profile), only)
    jobs = jobs or default_jobs()
    study = Study.prepare(plan, Path(results), data_root, log_output)
    if jobs > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    start = time.perf_counter()
    runs = plan.runs
    # the plan first: a study still running (or stopped) is readable, its finished runs shown
    _write_study_records(plan, study, {"ran": 0, "skipped": 0}, jobs, executor, 0.0, complete=False)
    if executor == "pool":
        counts = _run_pool(runs, study, jobs, warm_kernels)
    else:
        ex = submitit_executor(executor, study.out_root / "submitit", jobs, slurm)
        counts = (_run_submitit_local(runs, study, jobs, ex) if executor == "local" else _run_slurm(runs, study, ex))
    _write_study_records(plan, study, counts, jobs, executor, time.perf_counter() - start)
    log.info("study %s: %d runs executed, %d unchanged, %.0f s; results in %s", profile, counts["ran"],
             counts["skipped"], time.perf_counter() - start, study.out_root)
    return study.out_root


def _write_study_records(plan: Plan, study: Study, counts: dict, jobs: int, executor: str, seconds: float,
                         complete: bool = True) -> None:
    """plan.json, study.json, B's parameter table and summary.csv.

    Written before the first run (``complete=False``: ``study.json`` says ``"complete": false``) and
    again once every run has finished; summary.csv only then.
    """
    out_root = study.out_root
    write_json_atomic(out_root / "plan.json", Plan(plan.profile, plan.cells, plan.not_run).to_json())
    write_json_atomic(out_root / "b-table2" / "parameters.json",
                      {"rows": parameter_counts(), "provenance": provenance(profile=plan.profile)})
    write_json_atomic(out_root / "study.json", {
        "profile": plan.profile, "data_root": study.root, "data_fingerprint": study.data_fp,
        "synthetic": not study.data_root, "complete": complete, "runs": len(plan.runs), **counts, "jobs": jobs,
        "executor": executor, "wall_time_s": round(seconds, 1),
        "provenance": provenance(profile=plan.profile, data=study.root),
    })
    if complete:
        from .report import write_study_summary

        write_study_summary(out_root)  # summary.csv: every run's numbers, one row per run x split x metric
