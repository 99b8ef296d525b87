"""Do a checkpoint's frozen features separate COVID from NonCOVID? A linear probe, fitted well.

B7's frozen row (He et al. 2020, Table VII) trains only the classifier on top of a frozen
backbone, with the fine-tuning recipe (Adam, lr 1e-4, 30 epochs). In the recorded cpu study that
network ended at chance (test AUC 48.0 [36.8, 59.1]). Either the features carry no class signal at
64 px, or the recipe did not fit the head. This script separates the two: it computes each
checkpoint's frozen features once (the evaluation transform, no augmentation) on COVID19-CT's
train / val / test splits and fits an L2 logistic regression, choosing C on the validation split.

    python bench/frozen_probe.py --data ../shared/data/covid-ct \\
        --checkpoint mocov2=RUNS/sstl_m-resnet18-a0-moco_v2-s0-cce1f393/last.pt \\
        --checkpoint stl_n=RUNS/stl_n-resnet18-a0-a_stl_n-s0-ed4c064e/last.pt \\
        --checkpoint random= --out results/pilot/frozen-probe.json

An empty checkpoint is the random-init network. Prints one line per checkpoint and C.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from covtl.data import datasets as ds
from covtl.data.transforms import build_transform
from covtl.provenance import provenance
from covtl.train import handoff


@torch.inference_mode()
def features(model: torch.nn.Module, dataset, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    xs, ys = [], []
    for b in loader:
        xs.append(model.forward_features(b["image"]).flatten(1).numpy())
        ys.append(b["label"].numpy())
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the COVID19-CT folder (its published layout)")
    p.add_argument("--checkpoint", action="append", required=True, metavar="NAME=PATH",
                   help="a last.pt to probe; an empty PATH is the random-init network")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--stage", default="b_supervised", help="the augmentation family (its eval transform)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(2)
    tf = build_transform(args.stage, args.size, train=False)
    splits = {s: ds.load_dataset("covid-ct", Path(args.data), s, tf) for s in ("train", "val", "test")}
    out = {"size": args.size, "backbone": args.backbone, "provenance": provenance(seed=0, device="cpu"),
           "probes": {}}
    for item in args.checkpoint:
        name, _, path = item.partition("=")
        t0 = time.perf_counter()
        model = handoff(args.backbone, num_classes=2, checkpoint=path or None, seed=0).eval()
        feats = {s: features(model, d) for s, d in splits.items()}
        scaler = StandardScaler().fit(feats["train"][0])
        x = {s: scaler.transform(f[0]) for s, f in feats.items()}
        y = {s: f[1] for s, f in feats.items()}
        rows = []
        for c in (1e-4, 1e-3, 1e-2, 1e-1, 1.0):
            clf = LogisticRegression(C=c, max_iter=5000).fit(x["train"], y["train"])
            row = {"C": c}
            for s in ("train", "val", "test"):
                prob = clf.predict_proba(x[s])[:, 1]
                row[f"{s}_acc"] = float(((prob >= 0.5) == y[s]).mean())
                row[f"{s}_auc"] = float(roc_auc_score(y[s], prob))
            rows.append(row)
            print(f"{name:>8} C={c:<6g} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "C"),
                  flush=True)
        best = max(rows, key=lambda r: (r["val_acc"], r["val_auc"]))
        print(f"{name:>8} chosen on val: C={best['C']:g}: test acc {best['test_acc']:.3f}, "
              f"test AUC {best['test_auc']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        out["probes"][name] = {"checkpoint": Path(path).parent.name if path else "", "by_C": rows,
                               "chosen": best}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
