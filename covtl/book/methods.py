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
           "ssl_settings", "scale_limits", "stand_ins"]


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

    rows = {}
    for name, (cls, kw) in SSL_METHODS.items():
        rows[name] = {"module": cls.__name__, **kw}
        if "mlp_hidden" in kw and kw["mlp_hidden"] is None:  # MoCo v1: no hidden layer
            rows[name]["mlp_hidden"] = "none (linear)"
    return pd.DataFrame(rows).T


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


def scale_limits(profile: str = "cpu") -> str:
    """Markdown: what a reduced profile changes from the papers' settings (read from
    :mod:`covtl.profiles` and :mod:`covtl.recipes`), and so what its verdicts can and cannot say."""
    from ..profiles import PROFILES
    from ..recipes import RECIPES

    p, paper = PROFILES[profile], PROFILES["paper"]
    if p.name == "paper":
        return "The `paper` profile runs the papers' own settings: its verdicts speak to the papers directly."
    size = p.image_size or RECIPES["a_finetune"].image_size
    swapped = {k: v for k, v in p.backbones.items() if paper.backbones.get(k) != v}
    networks = ", ".join(f"{k} by {v}" for k, v in swapped.items())
    skipped = sorted(set(paper.backbones) - set(p.backbones))
    variants = [v for v in paper.attn_variants if v not in p.attn_variants]
    finetune = RECIPES["a_finetune"]
    lines = [
        f"- **Images** at {size} px, not the papers' {finetune.image_size} px: fine detail such as small "
        "ground-glass opacities is partly lost.",
        f"- **Networks**: stand-ins replace the papers' ({networks}); not run at all: "
        f"{', '.join(skipped) or 'none'}. Every table's column *network run* names the network that ran.",
        f"- **Attention variants**: {', '.join(p.attn_variants)} only"
        + (f" ({', '.join(variants)} not run)." if variants else "."),
        f"- **Natural images** (STL-N): a Tiny ImageNet subset of {p.natural_classes} classes at {size} px instead "
        f"of ImageNet's {paper.natural_classes} classes, and {p.epochs.get('a_stl_n', '?')} epochs.",
        f"- **Training length**: {p.epochs.get('a_finetune', '?')} fine-tuning epochs (paper A: "
        f"{finetune.epochs}), batches of at most {p.max_batch}, at most {p.max_train} training images per "
        "stage.",
        f"- **Seeds**: {p.seeds} fine-tuning seeds; each pretraining stage ran "
        + ("once, so its own run-to-run variation is not in the intervals." if p.pretrain_seeds == 1 else
           f"{p.pretrain_seeds} times."),
        "",
        "So a verdict at this scale tests whether the **direction and rough size of a claimed difference "
        "between rows** holds when both rows are trained the same reduced way on the real data. It cannot "
        "test the papers' absolute numbers, nor effects that need what was cut: ImageNet-scale pretraining, "
        "full-resolution images, the papers' deeper networks, or long schedules. A claim *within noise* here "
        "may still hold at paper scale; compare its minimum detectable effect with the paper's effect.",
    ]
    return "\n".join(lines)

