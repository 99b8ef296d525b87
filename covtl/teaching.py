"""What a class needs beyond the study: the helpers of the teaching chapter (``book/teaching.md``).

Each exercise of the chapter reruns a row of the study with one thing changed (the seed, the
data, the recipe, the stage), so every helper starts from a row of a finished study: the run
behind it (``results/<profile>/plan.json``), its parameters and the checkpoint it started from.

    covtl teach rows   --table A4                       the rows of a table and the run behind each
    covtl teach subset --fraction 0.25 --out data/quarter      a data root with a share of the training patients
    covtl teach subset --drop-test-duplicates --out data/no-leaks   ... without test images copied in training
    covtl teach rerun  --table A4 --model "R-50 Baseline" --setting "w/o TL" --seeds 0 1 2
    covtl teach score  --table A6 --model "R-50 Baseline" --setting "w STL-N"   one transferability run
    covtl teach show   --table B3 --model ResNet-18 --setting Rand.   test metrics with either positive class

Paths given on the command line are relative to the working directory (run them from the
repository root); outputs go to ``results/class/`` unless ``--out`` says otherwise, one folder
per seed, and a folder that already holds a finished run is read, not run again.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
#: relative to the working directory, like every path a student types
RESULTS = Path("results")
CLASS_OUT = Path("results") / "class"
NATS_TO_BITS = 1 / math.log(2)  # the book reports LEEP in bits (paper A's scale)

__all__ = [
    "Job", "book_rows", "build_parser", "class_note", "helpers", "html_table", "main", "plan_rerun",
    "plan_score", "reference",
    "positive_classes", "register", "rerun", "results_root", "rows", "run_summary", "score",
    "stage_parameters", "study_time_note", "subset_data_root", "time_note",
]


# ---------------------------------------------------------------------------- the study's rows


def results_root(profile: str | None = None, results: str | os.PathLike = RESULTS) -> Path:
    """``results/<profile>``; without a profile, the folder the book is being built from
    (``$COVTL_RESULTS``, else ``results/$COVTL_PROFILE``, else ``results/quick``)."""
    if profile:
        return Path(results) / profile
    if os.environ.get("COVTL_RESULTS"):
        return Path(os.environ["COVTL_RESULTS"])
    return REPO / "results" / os.environ.get("COVTL_PROFILE", "quick")


def _plan(root: Path) -> dict[str, Any]:
    path = root / "plan.json"
    if not path.is_file():
        raise FileNotFoundError(f"no study results in {root} (plan.json missing): run "
                                f"`covtl study --profile {root.name}` first, or give --results")
    return json.loads(path.read_text())


def _study(root: Path) -> dict[str, Any]:
    path = root / "study.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def rows(root: Path, table: str | None = None) -> pd.DataFrame:
    """The rows of the study (of one table): model, setting, and the run behind each (seed 0)."""
    import pandas as pd

    plan = _plan(root)
    out = []
    for cell in plan["cells"]:
        if table and cell["table"] != table:
            continue
        rid = cell["runs"][0]
        spec = plan["runs"][rid]
        out.append({"table": cell["table"], "model": cell["model"], "setting": cell["setting"],
                    "stage": spec["notebook"], "recipe": spec["params"].get("recipe", ""),
                    "starts from": spec["upstream"] or spec.get("init") or "random init", "run": rid})
    if table and not out:
        tables = sorted({c["table"] for c in plan["cells"]})
        raise ValueError(f"table {table!r} has no rows in {root}; choose one of {', '.join(tables)}")
    return pd.DataFrame(out)


def _cell(plan: dict[str, Any], table: str, model: str, setting: str) -> dict[str, Any]:
    for cell in plan["cells"]:
        if (cell["table"], cell["model"], cell["setting"]) == (table, model, setting):
            return cell
    choices = [f"--model {shlex.quote(c['model'])} --setting {shlex.quote(c['setting'])}"
               for c in plan["cells"] if c["table"] == table]
    if not choices:
        tables = sorted({c["table"] for c in plan["cells"]})
        raise ValueError(f"table {table!r} was not run at the {plan['profile']} profile; choose one of "
                         f"{', '.join(tables)}")
    raise ValueError(f"{table} has no row {model!r} / {setting!r}; its rows are:\n  " + "\n  ".join(choices))


def stage_parameters(stage: str) -> dict[str, Any]:
    """The parameters cell of ``notebooks/<stage>.py``: name -> default value."""
    path = NOTEBOOKS / f"{stage}.py"
    if not path.is_file():
        stages = sorted(p.stem for p in NOTEBOOKS.glob("*.py"))
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(stages)}")
    match = re.search(r'^# %% tags=\["parameters"\]\n(.*?)(?=^# %%)', path.read_text(), flags=re.S | re.M)
    if match is None:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    return {node.target.id: ast.literal_eval(node.value) for node in ast.parse(match.group(1)).body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


# ---------------------------------------------------------------------------- one notebook run


@dataclass(frozen=True)
class Job:
    """One stage notebook to run: what ``papermill`` gets."""

    stage: str  # notebook name in notebooks/
    params: dict[str, Any] = field(hash=False)  # papermill parameters (absolute paths)
    label: str = ""  # what it reruns, for messages

    @property
    def out_dir(self) -> Path:
        return Path(self.params["out_dir"])

    @property
    def done(self) -> bool:
        return (self.out_dir / "metrics.json").is_file()

    def command(self) -> str:
        """The shell line that runs it by hand (after ``jupytext --to ipynb notebooks/<stage>.py``)."""
        args = " ".join(f"{'-r' if isinstance(v, str) else '-p'} {k} {shlex.quote(str(v))}"
                        for k, v in self.params.items())
        return f"papermill notebooks/{self.stage}.ipynb {shlex.quote(str(self.out_dir / 'notebook.ipynb'))} {args}"

    def run(self) -> dict[str, Any]:
        """Execute the notebook into ``out_dir`` (unless a finished run is there); its ``metrics.json``."""
        if not self.done:
            import jupytext
            import nbformat
            import papermill

            self.out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / f"{self.stage}.ipynb"
                nbformat.write(jupytext.read(NOTEBOOKS / f"{self.stage}.py"), source)
                try:
                    papermill.execute_notebook(str(source), str(self.out_dir / "notebook.ipynb"),
                                               parameters=self.params, kernel_name="python3", cwd=os.getcwd(),
                                               progress_bar=False)
                except papermill.PapermillExecutionError as err:
                    raise RuntimeError(f"{self.label}, seed {self.params.get('seed')}: cell {err.exec_count} raised "
                                       f"{err.ename}: {err.evalue} (the executed notebook: "
                                       f"{self.out_dir / 'notebook.ipynb'})") from None
        return json.loads((self.out_dir / "metrics.json").read_text())


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", p).strip("-") for p in parts if p)


def _threads(root: Path, run_id: str) -> int | None:
    """The CPU threads a CPU run used (results on CPU depend on it); None for a GPU run."""
    path = root / "runs" / run_id / "metrics.json"
    prov = json.loads(path.read_text()).get("provenance", {}) if path.is_file() else {}
    if str(prov.get("device", "cpu")).startswith("cuda"):
        return None
    return prov.get("cpu_threads")


def _data_root(root: Path, data_root: str | os.PathLike | None) -> str:
    """The data root a rerun reads: the one given, else the study's ("" = embedded synthetic)."""
    if data_root:
        path = Path(data_root).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"data root {data_root} not found (make one with `covtl teach subset`)")
        return str(path)
    study = _study(root)
    return "" if study.get("synthetic", True) else str(study.get("data_root") or "")


def _checkpoint(root: Path, spec: dict[str, Any]) -> str:
    """The ``init`` a run of the plan started from: its upstream run's ``last.pt``, ``imagenet`` or ""."""
    if spec["upstream"]:
        path = root / "runs" / spec["upstream"] / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the study has not finished the run this row starts "
                                    f"from; run `covtl study --profile {root.name}` first")
        return str(path.resolve())
    return spec.get("init") or ""


def _init(value: str) -> str:
    """``--init``: a checkpoint path, ``imagenet``, or ``none`` (random initialisation)."""
    if value in ("none", ""):
        return ""
    if value == "imagenet":
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {value} not found; give a last.pt, imagenet or none")
    return str(path.resolve())


def plan_rerun(root: Path, table: str, model: str, setting: str, *, seed: int = 0,
               out: str | os.PathLike = CLASS_OUT, data_root: str | os.PathLike | None = None,
               stage: str | None = None, recipe: str | None = None, init: str | None = None) -> Job:
    """The run behind one row of the study, to run again with one thing changed.

    ``seed``, ``data_root`` (a folder, e.g. from :func:`subset_data_root`), ``recipe`` and
    ``init`` (``none``, ``imagenet`` or a checkpoint) replace the recorded values; ``stage``
    runs another notebook from the same starting checkpoint (e.g. a fine-tune from the
    checkpoint an A6 row scored). Everything else, the thread count of a CPU run included, is
    as the study ran it. The outputs go to ``out/<row>[_stage][_recipe][_data]/s<seed>``.
    """
    plan = _plan(root)
    rid = _cell(plan, table, model, setting)["runs"][0]
    spec = plan["runs"][rid]
    stage = None if stage == spec["notebook"] else stage
    accepted = stage_parameters(stage or spec["notebook"])
    params = {k: v for k, v in spec["params"].items() if k in accepted}
    if recipe is not None:
        if "recipe" not in accepted:
            raise ValueError(f"the {stage or spec['notebook']} stage takes no recipe")
        params["recipe"] = recipe
    params.update(profile=plan["profile"], seed=seed, data_root=_data_root(root, data_root),
                  init=_init(init) if init is not None else _checkpoint(root, spec))
    threads = _threads(root, rid)
    if threads and "threads" in accepted:
        params["threads"] = threads
    name = _slug(table, model, setting, stage or "", recipe or "", Path(data_root).name if data_root else "",
                 f"init-{Path(init).parent.name or init}" if init else "")
    params["out_dir"] = str((Path(out) / plan["profile"] / name / f"s{seed}").resolve())
    label = (f"{table} {model} / {setting}" + (f" as {stage}" if stage else "")
             + (f", recipe {recipe}" if recipe else ""))
    return Job(stage or spec["notebook"], params, label)


def plan_score(root: Path, table: str | None = None, model: str | None = None, setting: str | None = None, *,
               init: str | None = None, backbone: str | None = None, n_attn: int | None = None, seed: int = 0,
               out: str | os.PathLike = CLASS_OUT, data_root: str | os.PathLike | None = None) -> Job:
    """One transferability run (LEEP, NCE, LogME, H-score) on the checkpoint a row starts from
    (an A6 row: its own run), or on any checkpoint (``init``; backbone and ATTNs read from it)."""
    if table:
        if not (model and setting):
            raise ValueError("give --model and --setting with --table")
        job = plan_rerun(root, table, model, setting, seed=seed, out=out, data_root=data_root,
                         stage="transferability", init=init)
        if "source_classes" not in job.params:  # a fine-tune row: a random head has the natural classes
            from .profiles import get_profile

            job.params["source_classes"] = get_profile(job.params["profile"]).natural_classes
        return job
    if not init:
        raise ValueError("give a row (--table --model --setting) or a checkpoint (--init)")
    plan = _plan(root)
    checkpoint = _init(init)
    if checkpoint in ("", "imagenet") and not backbone:
        raise ValueError("--init none/imagenet needs --backbone (and --n-attn)")
    if checkpoint not in ("", "imagenet") and (backbone is None or n_attn is None):
        import torch

        arch = torch.load(checkpoint, map_location="cpu", weights_only=False).get("arch", {})
        backbone, n_attn = backbone or arch.get("name"), arch.get("n_attn", 0) if n_attn is None else n_attn
    from .profiles import get_profile

    name = _slug(Path(checkpoint).parent.name if checkpoint not in ("", "imagenet") else init or "random",
                 Path(data_root).name if data_root else "")
    params = {"profile": plan["profile"], "data_root": _data_root(root, data_root), "seed": seed,
              "backbone": backbone, "n_attn": n_attn or 0, "init": checkpoint,
              "source_classes": get_profile(plan["profile"]).natural_classes,
              "out_dir": str((Path(out) / plan["profile"] / f"score_{name}" / f"s{seed}").resolve())}
    return Job("transferability", params, f"score {init}")


# ---------------------------------------------------------------------------- reading records


def _value(x: Any) -> float:
    """A metric as recorded: a number, or ``{"value", "low", "high"}``; null is NaN."""
    x = x.get("value") if isinstance(x, dict) else x
    return float("nan") if x is None else float(x)


def run_summary(record: dict[str, Any], which: str = "best_val") -> dict[str, float]:
    """The numbers a class compares, from one ``metrics.json``: the test metrics of a fine-tune
    (COVID positive, the network chosen on validation), or the scores of a transferability run
    (LEEP in bits, as the book shows it)."""
    if "test" in record:
        test = record["test"][which]
        metrics = test["covid_positive"]
        return {"accuracy": _value(metrics["accuracy"]), "auc": _value(metrics["auc"]),
                "f1": _value(metrics["f1"]), "train images": record.get("n_train", float("nan")),
                "test images": test.get("n_images", float("nan"))}
    if "scores" in record:
        s = record["scores"]
        return {"leep (bits)": _value(s.get("leep")) * NATS_TO_BITS, "nce": _value(s.get("nce")),
                "logme": _value(s.get("logme")), "h_score": _value(s.get("h_score"))}
    return {}


def book_rows(cells: Iterable[tuple[str, str, str]], root: Path | None = None) -> pd.DataFrame:
    """What the study recorded for these rows (seed 0): the numbers a rerun is compared with."""
    import pandas as pd

    root = root or results_root()
    if not (root / "plan.json").is_file():
        return pd.DataFrame()
    plan = _plan(root)
    out = []
    for table, model, setting in cells:
        rid = _cell(plan, table, model, setting)["runs"][0]
        path = root / "runs" / rid / "metrics.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        out.append({"table": table, "model": model, "setting": setting, **run_summary(record)})
    return pd.DataFrame(out).set_index(["table", "model", "setting"])


def positive_classes(record: dict[str, Any], which: str = "best_val") -> pd.DataFrame:
    """A fine-tune's test metrics computed with COVID and with NonCOVID as the positive class."""
    import pandas as pd

    test = record["test"][which]
    table = pd.DataFrame({"COVID positive": {k: _value(v) for k, v in test["covid_positive"].items()},
                          "NonCOVID positive": {k: _value(v) for k, v in test["noncovid_positive"].items()}})
    table.index.name = "metric"
    return table


# ---------------------------------------------------------------------------- helpers a class runs


def rerun(root: Path, table: str, model: str, setting: str, seeds: Sequence[int] = (0,), *, dry_run: bool = False,
          echo: Callable[[str], Any] = print, **changes: Any) -> pd.DataFrame:
    """Run one row again for each seed (see :func:`plan_rerun` for ``changes``); one line per seed,
    then the mean and standard deviation over seeds and the study's own seed-0 number."""
    jobs = [plan_rerun(root, table, model, setting, seed=s, **changes) for s in seeds]
    return _run_jobs(root, jobs, [(table, model, setting)], dry_run, echo)


def score(root: Path, table: str | None = None, model: str | None = None, setting: str | None = None, *,
          dry_run: bool = False, echo: Callable[[str], Any] = print, **changes: Any) -> pd.DataFrame:
    """One transferability run (see :func:`plan_score`); rescoring an A6 row shows the study's scores beside it."""
    job = plan_score(root, table, model, setting, **changes)
    same = table == "A6" and not changes.get("init") and not changes.get("data_root")
    return _run_jobs(root, [job], [(table, model, setting)] if same else [], dry_run, echo)


def _run_jobs(root: Path, jobs: list[Job], book: list[tuple[str, str, str]], dry_run: bool,
              echo: Callable[[str], Any]) -> pd.DataFrame:
    import pandas as pd

    if dry_run:
        echo(f"jupytext --to ipynb notebooks/{jobs[0].stage}.py")
        for job in jobs:
            echo(f"mkdir -p {shlex.quote(str(job.out_dir))} && {job.command()}")
        return pd.DataFrame()
    lines = []
    for job in jobs:
        echo(f"{job.label}, seed {job.params['seed']}: " + (f"already done in {job.out_dir}" if job.done
                                                             else f"running {job.stage} into {job.out_dir}"))
        lines.append({"run": f"seed {job.params['seed']}", **run_summary(job.run())})
    table = pd.DataFrame(lines).set_index("run")
    if len(table) > 1:
        table.loc["mean"] = table.mean(numeric_only=True)
        table.loc["sd"] = table.iloc[:-1].std(numeric_only=True)
    for t, m, s in book:  # the study's own number, when it is the same kind of run
        study = book_rows([(t, m, s)], root)
        if not study.empty and set(study.columns) == set(table.columns):
            table.loc[f"study ({t} seed 0)"] = study.iloc[0]
    echo(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return table


def subset_data_root(out: str | os.PathLike, *, data_root: str | os.PathLike | None = None, fraction: float = 1.0,
                     drop_test_duplicates: bool = False, seed: int = 0) -> pd.DataFrame:
    """A data root like ``data_root`` (default: the embedded synthetic one) whose COVID19-CT split
    lists keep ``fraction`` of the training patients of each class (drawn with ``seed``), and,
    with ``drop_test_duplicates``, no test image that has a near-duplicate in the training split
    (the split audit's rule, :func:`covtl.data.audit.audit_covid_ct`).

    Only the lists are written; the images and the other datasets are symbolic links into the
    source. The copy's ``SHA256SUMS`` lists the new lists, so its data fingerprint differs.
    Returns the images and patients per split and class, before and after.
    """
    import hashlib

    import numpy as np
    import pandas as pd

    from .data.datasets import CovidCT, locate
    from .stages import resolve_data_root

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another --out")
    src = resolve_data_root(str(data_root or ""))
    ct = locate(src, "covid-ct")
    records = pd.concat([CovidCT(ct, split).records for split in CovidCT.SPLITS], ignore_index=True)
    records["class"] = [CovidCT.CLASSES[int(label)] for label in records.label]
    keep = pd.Series(True, index=records.index)
    rng = np.random.default_rng(seed)
    for _cls, group in records[records.split == "train"].groupby("class"):
        patients = np.array(sorted(group.group.unique()))
        chosen = set(rng.permutation(patients)[: max(1, round(fraction * len(patients)))])
        keep[group.index[~group.group.isin(chosen)]] = False
    if drop_test_duplicates:
        from .data.audit import audit_covid_ct

        pairs = audit_covid_ct(ct).near_duplicates
        leaks = set(pairs.path_a[(pairs.split_a == "test") & (pairs.split_b == "train")]) | set(
            pairs.path_b[(pairs.split_b == "test") & (pairs.split_a == "train")])
        keep[records.path.isin(leaks)] = False

    out.mkdir(parents=True)
    for child in src.iterdir():
        if child.resolve() != ct.resolve():
            (out / child.name).symlink_to(child.resolve(), target_is_directory=child.is_dir())
    ct_out = out / ct.relative_to(src)
    ct_out.mkdir(parents=True, exist_ok=True)
    for child in ct.iterdir():
        if child.name not in ("Data-split", "SHA256SUMS"):
            (ct_out / child.name).symlink_to(child.resolve(), target_is_directory=child.is_dir())
    shutil.copytree(ct / "Data-split", ct_out / "Data-split")  # small text files (the id files stay as published)
    kept = records[keep]
    for cls in CovidCT.CLASSES:
        for split in CovidCT.SPLITS:
            names = [Path(p).name for p in kept.path[(kept["class"] == cls) & (kept.split == split)]]
            CovidCT.split_file(ct_out, cls, split).write_text("".join(n + "\n" for n in names))
    if (ct / "SHA256SUMS").is_file():
        lines = []
        for line in (ct / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split(maxsplit=1)
            target = ct_out / name.lstrip("*")
            if name.lstrip("*").lstrip("./").startswith("Data-split/"):
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
            lines.append(f"{digest}  {name}")
        (ct_out / "SHA256SUMS").write_text("\n".join(lines) + "\n")

    def counts(df: pd.DataFrame) -> pd.DataFrame:
        return df.groupby(["split", "class"]).agg(images=("path", "size"), patients=("group", "nunique"))

    return counts(records).join(counts(kept).add_suffix(" kept")).fillna(0).astype(int)


# ---------------------------------------------------------------------------- the chapter's cells


def class_note(root: Path | None = None) -> Any:
    """Markdown: which results the times and numbers of the chapter come from."""
    from IPython.display import Markdown

    root = root or results_root()
    study = _study(root)
    if not (root / "plan.json").is_file() or not study:
        return Markdown(f"**Not yet run.** No study results at `{root}`: the times and reference numbers "
                        "below appear once `covtl study` has run and the book is rebuilt.")
    prov = study.get("provenance", {})
    where = "the embedded synthetic data" if study.get("synthetic") else f"the data at `{study.get('data_root')}`"
    return Markdown(
        f"The times and reference numbers on this page are those of the **{study['profile']}** results this book "
        f"was built from ({study.get('runs')} runs on {where}, {study.get('jobs')} at a time, on a machine with "
        f"{prov.get('cpu_threads')} CPU threads{', CUDA' if prov.get('cuda') else ''}). At the `smoke` profile "
        "the numbers mean nothing; build the book from `quick` results to see the ones this chapter describes.")


def study_time_note(root: Path | None = None) -> Any:
    """Markdown: how long the runs behind this book took (the wall times their ``run.json`` recorded)."""
    from IPython.display import Markdown

    root = root or results_root()
    study = _study(root)
    walls = [json.loads(p.read_text()).get("wall_time_s") or 0.0 for p in (root / "runs").glob("*/run.json")]
    if not study or not sum(walls):
        return Markdown("**Time:** known once the study has run.")
    jobs = max(1, int(study.get("jobs") or 1))
    total, wall = max(1, round(sum(walls) / 60)), max(1, round(sum(walls) / jobs / 60))
    return Markdown(f"**Time:** the {len(walls)} runs of the `{study['profile']}` study behind this book took "
                    f"{total} min of notebook time, about {wall} min with {jobs} at a time; add the first install, "
                    "the synthetic data on a fresh machine, and a "
                    "few minutes for the book. `covtl study --profile quick --dry-run` estimates a plan's time on "
                    "this kind of machine from measured per-image costs.")


def time_note(runs: Iterable[tuple[str, str, str, int]], root: Path | None = None, extra: str = "") -> Any:
    """Markdown: how long an exercise takes, from the recorded wall time of the runs it repeats.

    ``runs``: (table, model, setting, how many times) per row the exercise runs again.
    """
    from IPython.display import Markdown

    root = root or results_root()
    try:
        plan = _plan(root)
    except FileNotFoundError:
        return Markdown("**Time:** known once the study has run.")
    total, parts = 0.0, []
    for table, model, setting, n in runs:
        rid = _cell(plan, table, model, setting)["runs"][0]
        path = root / "runs" / rid / "run.json"
        wall = json.loads(path.read_text()).get("wall_time_s") if path.is_file() else None
        if wall is None:
            return Markdown("**Time:** known once the study has run.")
        total += n * wall
        parts.append(f"{n} x {wall:.0f} s ({table} *{model}, {setting}*)")
    minutes = max(1, round(total / 60))
    return Markdown(f"**Time:** about {minutes} min at the `{plan['profile']}` profile: "
                    f"{' + '.join(parts)}, the wall times the study recorded for these rows (plus seconds per "
                    f"run to start its notebook){extra}.")


def html_table(table: pd.DataFrame) -> Any:
    """A table for a page (IPython HTML), numbers to three decimals, no cell ever cut short."""
    import pandas as pd
    from IPython.display import HTML

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.0f}" if v.is_integer() and abs(v) >= 10 else f"{v:.3f}"
        return str(v)

    flat = (table.reset_index() if any(table.index.names) else table).map(cell)
    with pd.option_context("display.max_colwidth", None):
        return HTML(flat.to_html(index=False, border=0))


def reference(cells: Iterable[tuple[str, str, str]], root: Path | None = None) -> Any:
    """The study's seed-0 numbers of these rows (:func:`book_rows`) as a page table, to compare a rerun with."""
    from IPython.display import Markdown

    table = book_rows(cells, root)
    return html_table(table) if not table.empty else Markdown("*(the study's numbers appear once it has run)*")


def helpers() -> Any:
    """The ``covtl teach`` subcommands and what each does (a page table)."""
    import pandas as pd

    return html_table(pd.DataFrame([{"command": f"covtl teach {name}", "what it does": text}
                                    for name, text in COMMANDS.items()]))


# ---------------------------------------------------------------------------- command line

#: the subcommands and their one-line help
COMMANDS = {
    "rows": "the rows of the study (of one table) and the run behind each",
    "subset": "a data root with a share of COVID19-CT's training patients, or without the test images "
              "that have a near-duplicate in training",
    "rerun": "run one row of the study again, per seed, with one thing changed (data, recipe, stage, start)",
    "score": "one transferability run (LEEP, NCE, LogME, H-score) on a row's starting checkpoint or on any "
             "checkpoint",
    "show": "a fine-tune's test metrics with COVID and with NonCOVID as the positive class",
}


def _root(args: argparse.Namespace) -> Path:
    return results_root(args.profile, args.results)


def _cmd_rows(args: argparse.Namespace) -> int:
    import pandas as pd

    with pd.option_context("display.max_colwidth", None, "display.width", 250):
        print(rows(_root(args), args.table).to_string(index=False))
    return 0


def _cmd_subset(args: argparse.Namespace) -> int:
    counts = subset_data_root(args.out, data_root=args.data_root, fraction=args.fraction,
                              drop_test_duplicates=args.drop_test_duplicates, seed=args.seed)
    print(counts.to_string())
    print(f"\nwrote the data root {args.out}: pass it as --data-root to `covtl teach rerun`")
    return 0


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    return {"out": args.out, "data_root": args.data_root}


def _cmd_rerun(args: argparse.Namespace) -> int:
    rerun(_root(args), args.table, args.model, args.setting, args.seeds, dry_run=args.dry_run, stage=args.stage,
          recipe=args.recipe, init=args.init, **_changes(args))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    score(_root(args), args.table, args.model, args.setting, init=args.init, backbone=args.backbone,
          n_attn=args.n_attn, seed=args.seed, dry_run=args.dry_run, **_changes(args))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    if not args.runs and not (args.table and args.model and args.setting):
        raise ValueError("give run folders, or a row of the study (--table --model --setting)")
    if args.runs:
        records = {str(p): json.loads((Path(p) / "metrics.json").read_text()) for p in args.runs}
    else:
        plan = _plan(_root(args))
        rid = _cell(plan, args.table, args.model, args.setting)["runs"][0]
        records = {rid: json.loads((_root(args) / "runs" / rid / "metrics.json").read_text())}
    for name, record in records.items():
        print(name)
        print(positive_classes(record).to_string(float_format=lambda v: f"{v:.3f}"), end="\n\n")
    return 0


def _add_results(p: argparse.ArgumentParser) -> None:
    from .profiles import PROFILE_NAMES

    p.add_argument("--profile", choices=PROFILE_NAMES, default="quick", help="whose study results (default quick)")
    p.add_argument("--results", default=str(RESULTS), help="results folder (default results/)")


def _add_row(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--table", required=required, help="a table of the book, e.g. A4 (see `covtl teach rows`)")
    p.add_argument("--model", required=required, help='its row, e.g. "R-50 Baseline"')
    p.add_argument("--setting", required=required, help='its column, e.g. "w/o TL"')


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="data root to use instead of the study's (covtl teach subset)")
    p.add_argument("--out", default=str(CLASS_OUT), help="where the runs go (default results/class/)")
    p.add_argument("--dry-run", action="store_true", help="print the papermill commands instead of running them")


def _add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rows", help=COMMANDS["rows"])
    _add_results(p)
    p.add_argument("--table", default=None, help="one table, e.g. A4")
    p.set_defaults(func=_cmd_rows)

    p = sub.add_parser("subset", help=COMMANDS["subset"])
    p.add_argument("--out", required=True, help="folder to create (e.g. data/quarter)")
    p.add_argument("--data-root", default=None, help="source data root (default: the embedded synthetic data)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of each class's training patients kept")
    p.add_argument("--drop-test-duplicates", action="store_true",
                   help="leave out test images with a near-duplicate in the training split (the split audit's rule)")
    p.add_argument("--seed", type=int, default=0, help="which patients are drawn (default 0)")
    p.set_defaults(func=_cmd_subset)

    p = sub.add_parser("rerun", help=COMMANDS["rerun"])
    _add_results(p)
    _add_row(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds to run (default 0)")
    p.add_argument("--stage", default=None, help="run this stage notebook from the row's starting checkpoint instead")
    p.add_argument("--recipe", default=None, help="another recipe, e.g. b_transfer_frozen")
    p.add_argument("--init", default=None, help="start from this checkpoint instead (a last.pt, imagenet or none)")
    _add_outputs(p)
    p.set_defaults(func=_cmd_rerun)

    p = sub.add_parser("score", help=COMMANDS["score"])
    _add_results(p)
    _add_row(p, required=False)
    p.add_argument("--init", default=None, help="a checkpoint (last.pt), or none with --backbone")
    p.add_argument("--backbone", default=None, help="network (default: the checkpoint's)")
    p.add_argument("--n-attn", type=int, default=None, help="ATTN blocks (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    _add_outputs(p)
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser("show", help=COMMANDS["show"])
    _add_results(p)
    _add_row(p, required=False)
    p.add_argument("runs", nargs="*", help="run folders (default: the row's run in the study)")
    p.set_defaults(func=_cmd_show)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``covtl teach <command>`` to covtl's command line."""
    p = subparsers.add_parser("teach", help="helpers for the teaching chapter's exercises")
    _add_commands(p.add_subparsers(dest="teach_command", required=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="covtl teach", description=__doc__.split("\n")[0])
    _add_commands(parser.add_subparsers(dest="teach_command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as err:
        print(f"covtl teach {args.teach_command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
