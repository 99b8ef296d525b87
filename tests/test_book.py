"""The book: its figures, its data files, its table of contents and its pages' prose.

Fast, CPU-only checks; building the book itself (which executes every page) is CI's
`jupyter-book build . -W -n --keep-going`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from covtl import book
from covtl import plotting as P
from covtl.book.claims import CONTROLLED, arms_of, load_claims, paper_effect
from covtl.compute import compute_estimate, measured_estimate
from covtl.paper import load_paper_numbers

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES = sorted(BOOK.glob("*.md"))

# ------------------------------------------------------------------------ figures


def _long(metrics=("accuracy", "f1"), rows=("a, x", "b, y")) -> pd.DataFrame:
    return pd.DataFrame([{"row": r, "metric": m, "paper": 90.0, "mean": 80.0 + i, "low": 75.0, "high": 85.0 + i}
                         for m in metrics for i, r in enumerate(rows)])


def test_paper_vs_ours_one_panel_per_metric():
    fig = P.paper_vs_ours(_long())
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "F1"]


def test_paper_vs_ours_paper_only_rows_and_missing_columns():
    df = _long(metrics=("auc",))
    df[["mean", "low", "high"]] = np.nan  # nothing run yet: the paper's numbers only
    assert len(P.paper_vs_ours(df).axes) == 1
    with pytest.raises(ValueError, match="missing"):
        P.paper_vs_ours(df.drop(columns="paper"))


def _maps(n=2, size=16, attention=True, masks=True):
    g = torch.Generator().manual_seed(0)
    maps = {"images": torch.randn(n, 3, size, size, generator=g), "gradcam": torch.rand(n, size, size, generator=g)}
    if attention:
        maps["attention"] = torch.rand(n, size, size, generator=g)
    if masks:
        m = torch.zeros(n, 1, size, size)
        m[:, :, 4:9, 4:9] = 1
        maps["masks"] = m
    return maps


def _panels(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def test_overlays_grid_image_heatmaps_mask():
    assert len(_panels(P.overlays(_maps()))) == 2 * 3  # the slice (mask outlined), Grad-CAM, attention
    assert len(_panels(P.overlays(_maps(n=3, attention=False, masks=False)))) == 3 * 2
    assert len(_panels(P.overlays(_maps(n=5), max_images=2))) == 2 * 3
    with pytest.raises(ValueError, match="no heatmap"):
        P.overlays(_maps(), ["saliency"])


def test_overlays_colour_heatmaps_perceptually_uniformly_with_a_colour_bar():
    from matplotlib.collections import QuadMesh

    assert P.HEATMAP_CMAP in {"viridis", "inferno", "magma", "plasma", "cividis"}
    fig = P.overlays(_maps(n=1))
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 1
    colours = [c for c in bars[0].collections if isinstance(c, QuadMesh)]  # the colour bar's solids
    assert [c.get_cmap().name for c in colours] == [P.HEATMAP_CMAP]
    assert all(ax.title.get_fontsize() >= 10 for ax in _panels(fig) if ax.get_title())


def test_score_vs_gain_titles_carry_spearman():
    df = pd.DataFrame({"leep": [-0.9, -0.8, -0.7, -0.6], "nce": [-0.5, -0.6, -0.4, -0.3],
                       "gain": [0.0, 1.0, 2.0, 3.0], "model": ["m"] * 4, "setting": list("abcd")})
    fig = P.score_vs_gain(df, "leep")
    assert len(fig.axes) == 1 and "rho = 1.00" in fig.axes[0].get_title()
    assert len(P.score_vs_gain(df, ["leep", "nce"]).axes) == 2
    few = P.score_vs_gain(df.head(2), "leep")  # too few points: rho undefined, no warning
    assert "undefined" in few.axes[0].get_title()
    five = P.score_vs_gain(df.assign(logme=df.leep, h_score=1.0, h_score_shrunk=df.nce),
                           ["leep", "nce", "logme", "h_score", "h_score_shrunk"])
    assert sum(ax.get_visible() and ax.axison for ax in five.axes) == 5  # two a row, the legend in the sixth


def test_a_score_constant_up_to_rounding_has_no_rank_correlation():
    # the plain H-score sits at its maximum 1 up to float noise; ranking that noise means nothing
    df = pd.DataFrame({"h_score": [1.0, 1.0 + 2e-15, 1.0 - 1e-15, 1.0 + 1e-15], "gain": [0.0, 1.0, 2.0, 3.0]})
    assert np.isnan(book.rank_correlations(df).loc["H-score", "Spearman rho"])


def test_training_curves_two_panels():
    hist = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_acc": 0.5 + 0.1 * e}
            for e in range(3)]
    assert len(P.training_curves(hist).axes) == 2
    assert len(P.training_curves({"a": hist, "b": hist[:1]}).axes) == 2


def test_region_figure_one_panel_per_slice():
    yy, xx = np.mgrid[:64, :64]
    body = ((xx - 32) / 28) ** 2 + ((yy - 32) / 22) ** 2 < 1
    lungs = (((xx - 20) / 8) ** 2 + ((yy - 30) / 12) ** 2 < 1) | (((xx - 44) / 8) ** 2 + ((yy - 30) / 12) ** 2 < 1)
    slice_ = np.where(body & ~lungs, 0.8, 0.05)
    assert len(P.region_figure([slice_, slice_]).axes) == 2


def test_a_flat_score_axis_reads_as_a_few_short_numbers():
    df = pd.DataFrame({"h_score": [1.0, 1.0 + 2e-15, 1.0 - 1e-15, 1.0 + 1e-15], "gain": [0.0, 1.0, 2.0, 3.0]})
    fig = P.score_vs_gain(df, "h_score")
    fig._repr_png_()  # draws, so that the tick labels are set
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and max(len(t) for t in labels) <= 6, labels


def test_figures_show_themselves_as_png():
    assert P.paper_vs_ours(_long())._repr_png_().startswith(b"\x89PNG")


# ------------------------------------------------------------------------ page helpers without results


def test_pages_render_before_the_study_has_run(tmp_path):
    page = book.TablePage("A2", root=tmp_path)
    assert page.res is None
    assert "Not yet run" in page.header().parts[-1].data
    paper_only = page.comparison().data
    assert "accuracy (paper)" in paper_only.columns and len(paper_only) == 6
    assert len(page.figure().axes) == 3
    assert not book.paper_notes("A6").empty and "0.-909" in book.paper_notes("A6").note.iloc[0]
    assert set(book.claims(book.complete_results(tmp_path)).verdict) == {"not yet run"}
    assert "not yet run" in page.tests().parts[-1].data  # every line of A2, in one line


def test_tables_show_every_character_and_keep_an_interval_on_one_line():
    from covtl.book.tables import interval_text

    command = "papermill notebooks/finetune.ipynb out.ipynb " + " ".join(f"-p p{i} {i}" for i in range(30))
    df = pd.DataFrame({"command": [command], "ours": [interval_text("81.3", "72.9", "88.8")]})
    html = book.show(df)._repr_html_()
    assert command in html and "..." not in html
    assert "81.3\N{NO-BREAK SPACE}[72.9,\N{NO-BREAK SPACE}88.8]" in html
    assert "overflow-x: auto" in html  # wider than the page: it scrolls
    assert book.show(pd.DataFrame({"x": range(200)}))._repr_html_().count("<td>") == 200


def test_rows_not_run_are_one_line(tmp_path):
    why = "not run at the quick profile"
    plan = {"profile": "quick", "cells": [], "runs": {},
            "not_run": [{"table": "A2", "model": m, "why": why} for m in ("R-50 1 ATTN", "R-101 Baseline")]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    line = book.TablePage("A2", root=tmp_path).not_run().data
    assert line == f"R-50 1 ATTN, R-101 Baseline: {why}." and "\n" not in line


def test_complete_results_drops_unfinished_cells(tmp_path):
    plan = {"profile": "smoke", "not_run": [], "runs": {},
            "cells": [{"table": "A2", "model": "R-50 Baseline", "setting": "w TL", "backbone": "resnet18",
                       "runs": ["done"]},
                      {"table": "A2", "model": "R-50 1 ATTN", "setting": "w TL", "backbone": "resnet18",
                       "runs": ["pending"]}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    for rid, status in (("done", "done"), ("pending", "running")):
        (tmp_path / "runs" / rid).mkdir(parents=True)
        (tmp_path / "runs" / rid / "run.json").write_text(json.dumps({"status": status}))
    (tmp_path / "runs" / "done" / "metrics.json").write_text("{}")
    res = book.complete_results(tmp_path)
    assert [c["model"] for c in res.cells("A2")] == ["R-50 Baseline"]
    assert len(res.planned) == 2  # the ledger still knows the pending row is planned


def test_compute_estimate_counts_every_run_once_in_the_total():
    per_run, per_table = compute_estimate("smoke")
    assert (per_run["GPU-hours"] > 0).all()
    total = per_table.loc["study (each run once)"]
    assert total["runs"] == len(per_run)
    assert total["GPU-hours"] == pytest.approx(per_run["GPU-hours"].sum())
    assert per_table.drop(index="study (each run once)")["GPU-hours"].max() <= total["GPU-hours"] + 1e-12


def _gpu_record(path, steps, **header):
    import json

    path.write_text(json.dumps({"device_name": "Test GPU", "torch": "x", "matmul_tflops": {"fp16": 100.0},
                                "provenance": {"commit": "abc"}, "size": 224, "steps": steps, **header}))
    return path


def test_measured_estimate_from_timed_steps(tmp_path):
    """GPU-hours = training images / measured images/s; an untimed step falls back to the FLOP model
    at the median achieved rate and is counted apart; a batch-capped (CPU dry-run) record is refused."""
    assert measured_estimate(tmp_path / "absent.json") is None
    per_run, _ = compute_estimate("paper")
    steps = per_run.drop_duplicates("step")
    left_out = steps.iloc[0]
    timed = [{"notebook": r.notebook, "factor": r.factor, "backbone": r.backbone, "n_attn": int(r.n_attn),
              "batch": int(r.step.rsplit("/b", 1)[1]), "batch_timed": int(r.step.rsplit("/b", 1)[1]),
              "images_per_s": 1000.0, "achieved_tflops": 50.0} for r in steps.iloc[1:].itertuples()]
    header, table = measured_estimate(_gpu_record(tmp_path / "gpu.json", timed))
    assert header["device_name"] == "Test GPU" and header["steps_timed"] == len(timed)
    assert header["fallback_tflops"] == pytest.approx(50.0)
    images = per_run["epochs"] * per_run["images/epoch"]
    is_left = per_run["step"] == left_out.step
    expected = (images[~is_left] / 1000 / 3600).sum() + (per_run.loc[is_left, "PFLOPs"] * 1e15 / 50e12 / 3600).sum()
    total = table.loc["study (each run once)"]
    assert total["GPU-hours (measured)"] == pytest.approx(expected)
    assert total["of which not timed"] == pytest.approx((per_run.loc[is_left, "PFLOPs"] * 1e15 / 50e12 / 3600).sum())
    assert total["of which not timed"] > 0
    capped = [{**s, "batch_timed": 2} for s in timed]
    with pytest.raises(ValueError, match="without --batch-cap"):
        measured_estimate(_gpu_record(tmp_path / "cpu.json", capped))


# ------------------------------------------------------------------------ data files and table of contents


def test_claims_reference_rows_of_the_paper_numbers():
    claims = load_claims()
    assert list(claims.columns) == ["id", "paper", "statement", "table", "model_a", "setting_a", "model_b",
                                    "setting_b", "metric", "kind", "margin", "model_c", "setting_c", "model_d",
                                    "setting_d"]
    assert claims.id.is_unique and len(claims) > 0
    assert set(claims.metric) <= {"accuracy", "f1", "auc"}
    paper = load_paper_numbers()
    keys = set(zip(paper.table, paper.model, paper.setting, strict=True))
    for c in claims.itertuples():
        arms = arms_of(c)
        assert c.table.startswith(c.paper), c.id
        for model, setting in arms.values():
            assert (c.table, model, setting.removesuffix(CONTROLLED)) in keys, c.id
        assert arms["a"] != arms["b"], c.id
        assert c.statement.strip(), c.id
        assert np.isfinite(paper_effect(c, paper)), c.id
    # B6's "does not surpass" lines are non-inferiority statements, with a margin
    ni = claims[claims.kind == "non-inferiority"]
    assert set(ni.id) == {"B6-07", "B6-08", "B6-09", "B6-10"} and (ni.margin > 0).all()
    # A's headline ("ATTNs gain more from transfer") is tested as an interaction, not as pairs
    inter = claims[claims.kind == "interaction"]
    assert {"A4", "A5"} <= set(inter.table)
    assert all("Baseline" in c.model_c and "Baseline" not in c.model_a for c in inter.itertuples())


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def test_every_paper_table_has_a_page_in_the_toc():
    files = _toc_files()
    assert len(files) == len(set(files))
    for f in files:
        assert (ROOT / f"{f}.md").is_file(), f
    tables = set(load_paper_numbers().table)
    missing = sorted(t for t in tables if f"book/{t.lower()}" not in files)
    assert not missing, f"tables without a page in _toc.yml: {missing}"
    assert {f"book/{p.stem}" for p in PAGES} == set(files), "every page in book/ is in the toc and vice versa"


def test_config_executes_every_page_and_fails_on_errors():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["only_build_toc_files"] is True
    assert cfg["execute"]["execute_notebooks"] == "force"
    assert cfg["execute"]["allow_errors"] is False


# ------------------------------------------------------------------------ no typed numbers in prose

#: the interval level fixed by the study (Methods, decision 3), a method constant rather than a result
ALLOWED = {"95%"}
NUMBER = re.compile(r"\d+(?:\.\d+)?\s*%|\d+(?:\.\d+)+")
SECTION_REF = re.compile(r"(?:\bsecs?\.|\bsections?|§)\s*$", re.IGNORECASE)


def prose(markdown: str) -> str:
    """What a page shows as prose: no front matter, code blocks or cells, math, inline code or link targets."""
    text = re.sub(r"\A---\n.*?\n---\n", "", markdown, flags=re.S)
    text = re.sub(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", "", text, flags=re.S | re.M)
    text = re.sub(r"\$\$.*?\$\$", "", text, flags=re.S)
    text = re.sub(r"\$[^$\n]+\$", "", text)
    text = re.sub(r"`[^`\n]+`", "", text)
    return re.sub(r"\]\([^)\s]*\)", "]", text)


def typed_numbers(markdown: str) -> list[str]:
    """Numbers with a decimal point or a percent sign in the prose, except section references and ALLOWED."""
    text = prose(markdown)
    found = []
    for m in NUMBER.finditer(text):
        if m.group().replace(" ", "") in ALLOWED or SECTION_REF.search(text[max(0, m.start() - 12):m.start()]):
            continue
        line = text.count("\n", 0, m.start()) + 1
        found.append(f"{m.group()!r} (prose line {line}: {text.splitlines()[line - 1].strip()[:80]!r})")
    return found


def test_checker_flags_typed_results_only():
    page = """---
kernelspec: {name: python3}
---
# A Table 2, eq. (1), sec. 6.3 and Sec. IV-E.4
Our accuracy is 88.2 and the gain 4.5% here; a 95% interval is fine.
```{code-cell} ipython3
x = 0.93  # code may hold numbers
```
$$ \\alpha_1 = 0.8 $$ and $\\tau = 0.07$ and `lr 0.3` and [link](v1.2.html).
"""
    flagged = typed_numbers(page)
    assert len(flagged) == 2 and "'88.2'" in flagged[0] and "'4.5%'" in flagged[1]


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_pages_type_no_numbers(page):
    found = typed_numbers(page.read_text())
    assert not found, f"{page.name}: numbers typed into prose: {found}"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_pages_are_executable_myst_notebooks(page):
    text = page.read_text()
    front = yaml.safe_load(re.match(r"\A---\n(.*?)\n---\n", text, flags=re.S).group(1))
    assert front["kernelspec"]["name"] == "python3"
    assert front["jupytext"]["text_representation"]["format_name"] == "myst"
    assert "```{code-cell} ipython3" in text, "every page has at least one executed cell (its provenance)"
    assert not re.search(r"^\s*(def|class) ", text, flags=re.M), "no def/class in pages: put it in covtl"


OWN_PAGES = [p for p in PAGES if p.stem != "teaching"]


@pytest.mark.parametrize("page", OWN_PAGES, ids=[p.stem for p in OWN_PAGES])
def test_pages_read_as_documents(page):
    """No "show code" toggles around presentation calls, and names imported, not ``P.xyz``."""
    text = page.read_text()
    assert "hide-input" not in text, "remove the input of presentation cells (tags: [remove-input])"
    assert "plotting as P" not in text


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_pages_cite_only_files_in_the_repository(page):
    assert "STUDY.md" not in page.read_text(), "the study's decisions are in book/methods.md"


def test_every_table_with_claims_shows_its_ledger_lines():
    for table in sorted(set(load_claims().table)):
        assert "page.tests()" in (BOOK / f"{table.lower()}.md").read_text(), table


def test_explanation_pages_warn_that_a_network_that_did_not_learn_draws_noise():
    pages = [p for p in PAGES if "explain_figure(" in p.read_text()]
    assert {p.stem for p in pages} == {"a_fig4", "b_fig5"}
    for page in pages:
        text = page.read_text()
        assert "{caution}" in text and "noise" in prose(text) and "explained_networks(" in text, page.name


def test_rerun_commands_repeat_a_cpu_runs_thread_count(tmp_path):
    """A teacher rerunning a CPU run must use its thread count, or get different numbers."""
    runs = {"cpu-run": {"device": "cpu", "cpu_threads": 1}, "gpu-run": {"device": "cuda:0", "cpu_threads": 8}}
    cells, specs = [], {}
    for rid, prov in runs.items():
        (tmp_path / "runs" / rid).mkdir(parents=True)
        (tmp_path / "runs" / rid / "metrics.json").write_text(json.dumps({"provenance": prov}))
        cells.append({"table": "A2", "model": rid, "setting": "s", "backbone": "resnet18", "runs": [rid]})
        specs[rid] = {"notebook": "finetune", "params": {"seed": 0}, "upstream": None, "init": ""}
    (tmp_path / "plan.json").write_text(json.dumps({"profile": "cpu", "cells": cells, "not_run": [], "runs": specs}))
    (tmp_path / "study.json").write_text(json.dumps({"profile": "cpu", "synthetic": False, "data_root": "/d"}))
    commands = book.papermill_commands(book.Results(tmp_path), "A2")["command"]
    assert "-p threads 1" in commands.loc[("cpu-run", "s")]
    assert "threads" not in commands.loc[("gpu-run", "s")]


# ------------------------------------------------------------------------ the recorded study and your run


def _study(root: Path, profile: str, synthetic: bool, runs: dict[str, str], table: str = "A-Fig4",
           complete: bool = True) -> None:
    """A results folder with one cell per run of ``table`` (run id -> status)."""
    cells = [{"table": table, "model": rid, "setting": "Grad-CAM", "backbone": "resnet18", "runs": [rid]}
             for rid in runs]
    specs = {rid: {"notebook": "explain", "params": {}, "upstream": None, "init": ""} for rid in runs}
    root.mkdir(parents=True, exist_ok=True)
    (root / "plan.json").write_text(json.dumps({"profile": profile, "cells": cells, "not_run": [], "runs": specs}))
    (root / "study.json").write_text(json.dumps({"profile": profile, "synthetic": synthetic, "complete": complete,
                                                 "runs": len(runs), "data_root": "/d", "provenance": {}}))
    for rid, status in runs.items():
        (root / "runs" / rid).mkdir(parents=True)
        (root / "runs" / rid / "run.json").write_text(json.dumps({"status": status}))
        if status == "done":
            (root / "runs" / rid / "metrics.json").write_text("{}")


def test_a_study_still_recording_says_how_far_it_is(tmp_path):
    _study(tmp_path, "cpu", False, {"a": "done", "b": "running", "c": "done"}, complete=False)
    line = book.load_results(tmp_path).provenance_line()
    assert "real data" in line and "recording in progress: 2 of 3 runs finished" in line
    _study(tmp_path / "done", "cpu", False, {"a": "done"})
    assert "in progress" not in book.load_results(tmp_path / "done").provenance_line()


def test_explanation_maps_are_kept_as_a_picture_of_the_same_runs(tmp_path):
    from IPython.display import Image
    from matplotlib.figure import Figure

    from covtl.book.maps import maps_picture, write_maps_figure

    src, dest = tmp_path / "study", tmp_path / "committed"
    _study(src, "cpu", False, {"x1": "done", "x2": "done"})
    assert write_maps_figure(book.complete_results(src), "A-Fig4", dest) is None  # no maps.pt: nothing drawn
    for rid in ("x1", "x2"):
        torch.save(_maps(attention=False), src / "runs" / rid / "maps.pt")
    live = book.explain_figure(book.complete_results(src), "A-Fig4")
    assert isinstance(live, Figure) and len(_panels(live)) == 2 * 3  # the slice and one Grad-CAM per run
    path = write_maps_figure(book.complete_results(src), "A-Fig4", dest)
    assert path == maps_picture(dest, "A-Fig4") and path.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(path.with_suffix(".json").read_text())["runs"] == ["x1", "x2"]
    # the committed folder: the records without maps.pt, and the picture
    _study(dest, "cpu", False, {"x1": "done", "x2": "done"})
    shown = book.explain_figure(book.complete_results(dest), "A-Fig4")
    assert isinstance(shown, Image) and shown.data == path.read_bytes()
    # a picture of other runs is never shown for these ones
    record = path.with_suffix(".json")
    record.write_text(json.dumps({"runs": ["x1"]}))
    assert isinstance(book.explain_figure(book.complete_results(dest), "A-Fig4"), Figure)


def test_your_run_is_shown_apart_from_the_headline(tmp_path):
    headline, yours = tmp_path / "cpu", tmp_path / "quick"
    _study(headline, "cpu", False, {"h": "done"})
    assert "No run of yours" in book.your_run(None, headline).parts[0].data
    assert "headline" in book.your_run(headline, headline).parts[0].data
    assert "No results" in book.your_run(tmp_path / "nothing", headline).parts[0].data
    _study(yours, "quick", True, {}, table="A2")
    parts = book.your_run(yours, headline).parts
    assert "Synthetic data" in parts[0].data  # the banner comes first
    assert "quick" in parts[1].data and "embedded synthetic data" in parts[1].data


def test_the_book_headline_is_the_recorded_study_when_there_is_one(tmp_path):
    from covtl.cli import book_profile

    assert book_profile(tmp_path, None) == "quick"
    _study(tmp_path / "cpu", "cpu", False, {"a": "done"})
    assert book_profile(tmp_path, None) == "cpu"
    assert book_profile(tmp_path, "smoke") == "smoke"
    assert (ROOT / "results" / "cpu" / "plan.json").is_file()  # the recorded study is committed
    assert "--yours $(PROFILE)" in (ROOT / "Makefile").read_text()  # make study shows your run apart


def test_localisation_scores_have_intervals_and_a_paired_difference_from_the_uniform_map(tmp_path):
    _study(tmp_path, "cpu", False, {"x": "done"})
    rng = np.random.default_rng(0)
    paths = [f"s{i}.png" for i in range(30)]
    energy = rng.uniform(0, 0.3, 30)
    rows = [{"path": p, "method": "uniform", "pointing_game": e, "energy_inside": e, "iou_at_half": e}
            for p, e in zip(paths, energy, strict=True)]
    rows += [{"path": p, "method": "gradcam", "pointing_game": True, "energy_inside": e + 0.2, "iou_at_half": e}
             for p, e in zip(paths, energy, strict=True)]
    pd.DataFrame(rows[::-1]).to_csv(tmp_path / "runs" / "x" / "localisation.csv", index=False)  # any order
    table = book.localisation_table(book.complete_results(tmp_path), "A-Fig4")
    gradcam = table.xs("Grad-CAM", level="method").iloc[0]
    assert gradcam["pointing game"].startswith("1.000") and gradcam.images == 30
    # the same slices resampled for both maps: a constant difference has a zero-width interval
    assert gradcam["energy inside vs uniform"] == "+0.200\N{NO-BREAK SPACE}[+0.200,\N{NO-BREAK SPACE}+0.200]"
    assert gradcam["IoU at half maximum vs uniform"].startswith("+0.000")
    low, high = (float(x) for x in re.findall(r"[\d.]+", gradcam["energy inside"])[1:])
    assert low < energy.mean() + 0.2 < high


def test_the_ledger_says_what_the_cpu_scale_changes_from_the_profile_itself():
    from covtl.profiles import PROFILES

    cpu = PROFILES["cpu"]
    text = book.scale_limits("cpu")
    assert f"Images** at {cpu.image_size} px" in text and f"{cpu.seeds} fine-tuning seeds" in text
    assert all(v in text for k, v in cpu.backbones.items() if PROFILES["paper"].backbones[k] != v)
    assert "cannot test" in text and "papers' own settings" in book.scale_limits("paper")
