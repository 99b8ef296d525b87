"""Pilot: covtl's fine-tune stage against a plain torchvision loop on the real COVID19-CT data.

The engine side runs ``covtl.stages.finetune_stage`` exactly as the study does (one run per
seed under ``<out>/engine-s<seed>``, reused when its metrics.json exists). The plain side is an
independent reference written entirely here: it reads the official split files itself and
trains torchvision's network with torch's Adam and torchvision transforms; covtl is imported
only to read the scaled recipe, so both sides use the same settings. Both score the
last-epoch model once on the test split (COVID = label 1 positive). Per metric it prints the
mean of each side and the mean difference engine - plain with a 95% hierarchical-bootstrap
interval (seeds per side, then test patients shared by both sides). Writes <out>/pilot.json.
Asserts nothing: this is a measurement.

    python bench/pilot.py [--data ../shared/data] [--out /tmp/covtl-pilot] [--seeds 0 1 2]
        [--profile cpu] [--recipe b_random_init] [--backbone resnet18] [--only engine|plain|both]
        [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image
from scipy.stats import rankdata
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from covtl.recipes import Recipe, get_recipe, scale_recipe

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, as covtl
METRICS = ("acc", "f1", "auc")
N_BOOT, BOOT_SEED = 2000, 12345


# ---------------------------------------------------------------- plain side (no covtl engine)

def read_split(root: Path, split: str) -> list[tuple[str, int]]:
    """(path, label) of one official split; label 1 = COVID."""
    items = []
    for label, cls in ((0, "NonCOVID"), (1, "COVID")):
        lines = (root / "Data-split" / cls / f"{split}CT_{cls}.txt").read_text(encoding="utf-8-sig").splitlines()
        items += [(str(root / "Images-processed" / f"CT_{cls}" / n.strip()), label) for n in lines if n.strip()]
    return items


def image_key(path: str) -> str:
    """``CT_COVID/<file>``: the same image on both sides, whatever the data root's spelling."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


class SplitImages(Dataset):
    """Images decoded by content with PIL (some .png files hold JPEG data), as RGB."""

    def __init__(self, items: list[tuple[str, int]], transform: T.Compose) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[i]
        with Image.open(path) as im:  # covtl composites alpha onto black; the 174 RGBA files are opaque
            image = im.convert("RGB")
        return self.transform(image), label


def plain_transforms(size: int) -> tuple[T.Compose, T.Compose]:
    """covtl's ``b_supervised`` stage at ``size`` s, in torchvision.transforms (covtl: the v2 API).

    Train: squash to round(256 s / 224) square (bilinear), RandomResizedCrop(s, scale 0.5-1), flip,
    ColorJitter(brightness 0.2, contrast 0.2). Eval: squash to s x s. ImageNet normalisation.
    """
    norm = [T.ToTensor(), T.Normalize(MEAN, STD)]
    base = round(256 * size / 224)
    train = T.Compose([T.Resize((base, base)), T.RandomResizedCrop(size, scale=(0.5, 1.0)),
                       T.RandomHorizontalFlip(), T.ColorJitter(brightness=0.2, contrast=0.2), *norm])
    return train, T.Compose([T.Resize((size, size)), *norm])


def cosine_lr(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The recipe's lr at a global step: cosine in epochs, evaluated mid-step (never exactly 0)."""
    t = (step + 0.5) / steps_per_epoch
    return recipe.lr * (0.5 * (1 + math.cos(math.pi * t / recipe.cosine_period)) if recipe.cosine_period else 1.0)


def sk_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Accuracy, F1 and AUC with COVID (label 1) positive, by sklearn; COVID when P(COVID) >= 0.5."""
    pred = (s >= 0.5).astype(int)
    return {"acc": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, zero_division=np.nan)),
            "auc": float(roc_auc_score(y, s))}


def run_plain(args: argparse.Namespace, recipe: Recipe, seed: int) -> dict[str, Any]:
    """Train torchvision's network on the train split, score the last epoch on the test split."""
    t0 = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # fp32 (covtl: AMP on CUDA)
    root = args.data / "covid-ct"
    torch.manual_seed(seed)
    train_items = read_split(root, "train")
    if args.max_train:
        keep = np.random.default_rng(seed).permutation(len(train_items))[: args.max_train]
        train_items = [train_items[i] for i in sorted(keep)]
    tf_train, tf_eval = plain_transforms(recipe.image_size)
    loader = DataLoader(SplitImages(train_items, tf_train), batch_size=recipe.batch_size, shuffle=True,
                        drop_last=False, generator=torch.Generator().manual_seed(seed))
    # torchvision's own init: for ResNets Kaiming-normal fan_out convs and the default Linear head,
    # the distribution covtl's kaiming_init (recipe.kaiming_init) redraws; not redrawn here
    model = torchvision.models.get_model(args.backbone, weights=None, num_classes=2).to(device)
    opt_cls = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.SGD
    extra = {"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}
    opt = opt_cls(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, **extra)
    steps = len(loader) if not recipe.max_steps_per_epoch else min(len(loader), recipe.max_steps_per_epoch)
    epochs, step = args.epochs or recipe.epochs, 0
    for _ in range(epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            if i >= steps:
                break
            for group in opt.param_groups:
                group["lr"] = cosine_lr(recipe, step, steps)
            loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    train_s = time.perf_counter() - t0
    test_items = read_split(root, "test")
    model.eval()
    probs = []
    with torch.no_grad():
        for x, _ in DataLoader(SplitImages(test_items, tf_eval), batch_size=recipe.batch_size):
            probs.append(torch.softmax(model(x.to(device)).float(), dim=1)[:, 1].cpu())
    s, y = torch.cat(probs).numpy(), np.array([lab for _, lab in test_items])
    return {"side": "plain", "seed": seed, "epochs": epochs, "image_size": recipe.image_size, **sk_metrics(y, s),
            "wall_s": time.perf_counter() - t0, "train_s": train_s,
            "reused": False, "preds": pd.DataFrame({"key": [image_key(p) for p, _ in test_items],
                                                    "label": y, "score": s})}


# ---------------------------------------------------------------- engine side (covtl, as the study)

def run_engine(args: argparse.Namespace, recipe: Recipe, seed: int) -> dict[str, Any]:
    """``finetune_stage`` for one seed (a finished run is read back, not retrained)."""
    from covtl.stages import StageConfig, finetune_stage
    from covtl.train import FinishedRunError

    out = args.out / f"engine-s{seed}"
    t0, reused = time.perf_counter(), (out / "metrics.json").is_file()
    if reused:
        rec = json.loads((out / "metrics.json").read_text())
    else:
        cfg = StageConfig(profile=args.profile, data_root=str(args.data), seed=seed, backbone=args.backbone,
                          out_dir=str(out))
        try:
            rec = finetune_stage(cfg, args.recipe)
        except FinishedRunError:
            rec, reused = json.loads((out / "metrics.json").read_text()), True
    wall = math.nan if reused else time.perf_counter() - t0
    ran = rec.get("config", {}).get("recipe", {})  # fit's run config (it replaces the stage's "config")
    if ran and (ran["name"], ran["epochs"], ran["image_size"]) != (recipe.name, recipe.epochs, recipe.image_size):
        raise SystemExit(f"{out} holds a run of {ran['name']} at {ran['epochs']} epochs, {ran['image_size']} px, "
                         "not of this recipe and profile; remove it or choose another --out")
    m = rec["test"]["last"]["covid_positive"]
    df = pd.read_csv(out / "predictions.csv")
    df = df[df.model == "last"]
    preds = pd.DataFrame({"key": df.path.map(image_key), "label": df.label, "score": df.prob_1,
                          "group": df.group.astype(str)})
    return {"side": "engine", "seed": seed, "epochs": len(rec["history"]), "image_size": recipe.image_size,
            "acc": m["accuracy"]["value"], "f1": m["f1"]["value"], "auc": m["auc"]["value"], "wall_s": wall,
            "train_s": rec["provenance"].get("train_time_s", math.nan), "reused": reused, "preds": preds}


# ---------------------------------------------------------------- statistics

def fast_metrics(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """[accuracy, F1, AUC] with COVID positive (numpy; sk_metrics' values, ~50x faster)."""
    pred, n_pos, n_neg = s >= 0.5, int(y.sum()), int((y == 0).sum())
    tp, fp, fn = (pred & (y == 1)).sum(), (pred & (y == 0)).sum(), (~pred & (y == 1)).sum()
    auc = (rankdata(s)[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else np.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
    return np.array([(pred == y).mean(), f1, auc], dtype=float)


def hierarchical_diff(eng: np.ndarray, pla: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """N_BOOT x 3 draws of mean(engine) - mean(plain): ``eng``/``pla`` are seeds x images scores on the
    same test images; a draw resamples each side's seeds, then patients (shared by both sides)."""
    rng = np.random.default_rng(BOOT_SEED)
    clusters = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    draws = np.empty((N_BOOT, len(METRICS)))
    for b in range(N_BOOT):
        se, sp = rng.integers(0, len(eng), len(eng)), rng.integers(0, len(pla), len(pla))
        idx = np.concatenate([clusters[i] for i in rng.integers(0, len(clusters), len(clusters))])
        me = np.mean([fast_metrics(y[idx], eng[k, idx]) for k in se], axis=0)
        mp = np.mean([fast_metrics(y[idx], pla[k, idx]) for k in sp], axis=0)
        draws[b] = me - mp
    return draws


def compare(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: each side's mean, and engine - plain on the test images both sides scored."""
    sides = {side: [r for r in rows if r["side"] == side] for side in ("engine", "plain")}
    out: dict[str, Any] = {m: {f"{side}_mean": float(np.mean([r[m] for r in rs])) for side, rs in sides.items() if rs}
                           for m in METRICS}
    eng, pla = sides["engine"], sides["plain"]
    if not eng or not pla:
        return out
    common = sorted(set.intersection(*(set(r["preds"].key) for r in eng + pla)))
    frames = [r["preds"].set_index("key").loc[common] for r in eng + pla]
    y, groups = frames[0].label.to_numpy(), frames[0].group.to_numpy()  # patient ids from covtl's loader
    scores = np.stack([f.score.to_numpy() for f in frames])
    se, sp = scores[: len(eng)], scores[len(eng):]
    point = np.mean([fast_metrics(y, s) for s in se], axis=0) - np.mean([fast_metrics(y, s) for s in sp], axis=0)
    low, high = np.nanpercentile(hierarchical_diff(se, sp, y, groups), [2.5, 97.5], axis=0)
    for i, m in enumerate(METRICS):
        out[m].update(diff=float(point[i]), low=float(low[i]), high=float(high[i]),
                      verdict="agree within noise" if low[i] <= 0 <= high[i] else "DISAGREE")
    out["n_test_common"], out["n_patients"] = len(common), len(np.unique(groups))
    # the engine's own metrics against sklearn's on its predictions.csv (a check of covtl.metrics)
    out["engine_vs_sklearn_max_abs"] = max(abs(r[m] - v) for r in eng for m, v in sk_metrics(
        r["preds"].label.to_numpy(), r["preds"].score.to_numpy()).items())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/covtl-pilot"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--recipe", default="b_random_init")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--only", choices=("engine", "plain", "both"), default="both")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)  # plain side only: smoke runs
    ap.add_argument("--max-train", type=int, default=None, help=argparse.SUPPRESS)  # plain side only
    args = ap.parse_args()
    if not (args.data / "covid-ct" / "Data-split").is_dir():
        ap.error(f"no COVID19-CT at {args.data}/covid-ct: pass --data pointing at the folder holding covid-ct/")
    recipe = scale_recipe(get_recipe(args.recipe), args.profile)
    if recipe.schedule not in ("cosine", "constant") or recipe.freeze_backbone or recipe.rotation_aux or recipe.dropout:
        ap.error(f"the plain loop mirrors cosine/constant recipes without freezing, rotation or dropout; "
                 f"{recipe.name} needs more")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        for side, run in (("engine", run_engine), ("plain", run_plain)):
            if args.only in (side, "both"):
                r = run(args, recipe, seed)
                rows.append(r)
                wall = "- (reused)" if r["reused"] else f"{r['wall_s']:.0f}s"
                print(f"{side:6s} seed {seed}  epochs {r['epochs']:2d}  size {r['image_size']}  acc {r['acc']:.3f}  "
                      f"f1 {r['f1']:.3f}  auc {r['auc']:.3f}  wall {wall} (train {r['train_s']:.0f}s)", flush=True)
    summary = compare(rows)
    for m in METRICS:
        s = summary[m]
        line = "  ".join(f"{k} {v:.3f}" for k, v in s.items() if k.endswith("_mean"))
        if "diff" in s:
            line += f"  engine-plain {s['diff']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}]  {s['verdict']}"
        print(f"{m:3s}  {line}")
    if "n_test_common" in summary:
        print(f"on {summary['n_test_common']} common test images, {summary['n_patients']} patients; engine's own "
              f"metrics vs recomputed from predictions.csv: max |diff| {summary['engine_vs_sklearn_max_abs']:.2g}")
    record = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "recipe": dataclasses.asdict(recipe), "n_boot": N_BOOT, "boot_seed": BOOT_SEED,
              "runs": [{k: v for k, v in r.items() if k != "preds"} for r in rows], "summary": summary}
    (args.out / "pilot.json").write_text(json.dumps(record, indent=2, default=float))
    print(f"wrote {args.out / 'pilot.json'}")


if __name__ == "__main__":
    main()
