"""The Methods chapter's tables, generated from the code that makes each decision.

Where the ATTNs go, paper A's lobe regions, the training recipes, the self-supervised settings,
the profiles and their stand-in networks, the cpu profile's time estimate and CRNet's
parameter count: each is read from the module that uses it, so the chapter cannot drift from
the code.
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from ..paper import load_paper_numbers

__all__ = ["attention_placement", "crnet_gap", "plan_estimate", "profiles_table", "recipes_table", "region_tuples",
           "ssl_settings", "stand_ins"]


def attention_placement() -> pd.DataFrame:
    """Zero-based block indices after which ATTNs go, per ResNet depth and variant (covtl.models.resnet)."""
    from ..models.resnet import RESNET_DEPTHS, attention_indices

    rows = []
    for depth in RESNET_DEPTHS:
        for n_attn in (1, 5):
            where = attention_indices(depth, n_attn)
            rows.append({"network": f"ResNet-{depth}", "ATTNs": n_attn,
                         "after blocks": ", ".join(f"{stage}{list(idx)}" for stage, idx in where.items())})
    order = [f"ResNet-{d}" for d in RESNET_DEPTHS]
    return pd.DataFrame(rows).pivot(index="network", columns="ATTNs", values="after blocks").reindex(order)


def region_tuples() -> pd.DataFrame:
    """Paper A's relative location tuples (x, y, w, h) of the five regions inside the lung box."""
    from ..regions import REGION_TUPLES

    return pd.DataFrame(REGION_TUPLES, index=["x (centre)", "y (centre)", "width", "height"]).T


def recipes_table(profile: str = "paper") -> pd.DataFrame:
    """Every training recipe at ``profile`` (``paper`` = as the papers give them), with its source."""
    from ..recipes import RECIPES, scale_recipe

    rows = [asdict(scale_recipe(r, profile)) for r in RECIPES.values()]
    cols = ["name", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs", "schedule",
            "milestones", "step_size", "cosine_period", "dropout", "image_size", "freeze_backbone", "source"]
    return pd.DataFrame(rows)[cols].set_index("name")


def ssl_settings() -> pd.DataFrame:
    """The self-supervised methods' settings (covtl.ssl.SSL_METHODS), before the queue cap."""
    from ..ssl import SSL_METHODS

    return pd.DataFrame({name: {"module": cls.__name__, **kw} for name, (cls, kw) in SSL_METHODS.items()}).T


def profiles_table() -> pd.DataFrame:
    """What each profile selects (covtl.profiles): recipes' scale, data caps, seeds, variants."""
    from ..profiles import PROFILES

    return pd.DataFrame([p.as_row() for p in PROFILES.values()]).set_index("profile")


def plan_estimate(profile: str = "cpu") -> pd.DataFrame:
    """``covtl study --dry-run``'s estimate of a profile's plan, per stage, from covtl/costs.json."""
    from ..study import dry_run

    report = dry_run(profile)
    rows = [{"stage": f"{stage} (single-thread CPU time)", "runs": n, "hours": round(t / 3600, 2)}
            for stage, (n, t) in report.by_stage().items()]
    rows.append({"stage": f"whole plan (wall time, {report.jobs} jobs)", "runs": len(report.runs),
                 "hours": round(report.wall_s / 3600, 2)})
    return pd.DataFrame(rows).set_index("stage")


def stand_ins() -> pd.DataFrame:
    """The network that runs for each paper network at each profile (blank: not run)."""
    from ..profiles import PROFILES

    return pd.DataFrame({name: dict(p.backbones) for name, p in PROFILES.items()}).fillna("")


def crnet_gap(num_classes: int = 1000) -> pd.DataFrame:
    """CRNet's parameter count as built from paper B's text beside Table II's."""
    from ..models import build_model, count_parameters

    ours = count_parameters(build_model("crnet", num_classes=num_classes))
    paper = load_paper_numbers().query("table == 'B2' and model == 'CRNet'").value.iloc[0]
    return pd.DataFrame({"parameters": {"covtl (from the text)": ours, "paper B, Table II": int(paper),
                                        "difference": ours - int(paper)}})
