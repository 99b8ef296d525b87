"""Real-data checks of the SSL methods, LEEP/LogME and the explanations (issues 4 and 5).

ResNet-50 with 5 attention blocks at 64 px on the real datasets in ../shared/data:

- ``finetune``: A's fine-tune recipe from random init, 3 epochs on COVID19-CT.
- ``ssl:<method>``: <method> (a_region_moco, moco_v1, moco_v2, simclr, rotation) pretrains 2
  epochs on the COVID19-CT train images (labels unused; MoCo queue 128, since the train split
  has only 425 images; batch 32, constant lr: ``--lr``, default the method's paper lr scaled
  linearly to batch 32), then the checkpoint fine-tunes 1 epoch through the engine.
- ``stlm``: A's STL-M recipe, 2 epochs on covidx-mini, then LEEP/LogME/NCE/H-score of that
  checkpoint, and of a random-init network, on the COVID19-CT train images.
- ``explain``: Grad-CAM and last-attention maps of the ``finetune`` checkpoint, scored against
  the medseg-covid lesion masks.

Prints one line of figures per check; writes runs under --out. Asserts nothing: this is a
measurement, not a test (the tests use the same code on synthetic data).

    python bench/realdata.py [--data ../shared/data] [--out /tmp/covtl-realdata] CHECK [CHECK ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torch.utils.data import DataLoader

from covtl.data import datasets as ds
from covtl.data.transforms import build_transform
from covtl.explain import localisation_scores
from covtl.models import build_model
from covtl.recipes import get_recipe
from covtl.ssl import build_ssl
from covtl.stages import _SSLViews
from covtl.train import FinishedRunError, TrainConfig, fit, handoff, seed_everything
from covtl.transferability import collect, transferability_scores

SIZE = 64
ARCH = {"name": "resnet50", "n_attn": 5, "num_classes": 2}
SSL_RECIPE = {"a_region_moco": "a_sstl_m", "moco_v1": "a_moco", "moco_v2": "b_moco", "simclr": "a_simclr",
              "rotation": "b_rotation_ssl"}


def covid_ct(data: Path, split: str, transform):
    return ds.load_dataset("covid-ct", data / "covid-ct", split, transform)


def finetune_splits(data: Path):
    train, ev = build_transform("a_finetune", SIZE, True), build_transform("a_finetune", SIZE, False)
    return covid_ct(data, "train", train), covid_ct(data, "val", ev), covid_ct(data, "test", ev)


def check_finetune(data: Path, out: Path) -> str:
    recipe = get_recipe("a_finetune").replace(epochs=3, batch_size=32, image_size=SIZE, lr=0.3 * 32 / 256,
                                              milestones=(2,))
    seed_everything(0)
    model = build_model("resnet50", num_classes=2, n_attn=5)
    start = time.time()
    res = fit(model, recipe, TrainConfig(out_dir=out / "finetune", seed=0, arch=ARCH), *finetune_splits(data))
    return f"finetune {time.time() - start:.0f}s test {json.dumps(_brief(res))}"


def check_ssl(data: Path, out: Path, method: str, lr: float | None) -> str:
    paper = get_recipe(SSL_RECIPE[method])
    lr = lr or paper.lr * 32 / paper.batch_size  # default: the paper's lr scaled linearly to batch 32
    recipe = paper.replace(epochs=2, batch_size=32, image_size=SIZE, lr=lr, milestones=(), schedule="constant")
    views = _SSLViews(recipe.augment, SIZE, regions=method == "a_region_moco")
    seed_everything(0)
    extra = {"queue_size": 128} if "moco" in method else {}
    task = build_ssl(method, build_model("resnet50", num_classes=2, n_attn=5), **extra)
    start = time.time()
    res = fit(task, recipe, TrainConfig(out_dir=out / f"ssl_{method}", seed=0, arch=ARCH),
              covid_ct(data, "train", views))
    t_ssl = time.time() - start
    model = handoff("resnet50", num_classes=2, n_attn=5, checkpoint=out / f"ssl_{method}" / "last.pt", seed=0)
    ft = get_recipe("a_finetune").replace(epochs=1, batch_size=32, image_size=SIZE, lr=0.03, milestones=())
    start = time.time()
    res2 = fit(model, ft, TrainConfig(out_dir=out / f"ssl_{method}_ft", seed=0, arch=ARCH), *finetune_splits(data))
    losses = [round(h["train_loss"], 3) for h in res["history"]]
    return (f"ssl {method} (lr {lr:g}): {t_ssl:.0f}s ({2 * 425 / t_ssl:.1f} img/s) losses {losses}; "
            f"fine-tune {time.time() - start:.0f}s test {json.dumps(_brief(res2))}")


def check_stlm(data: Path, out: Path) -> str:
    recipe = get_recipe("a_stl_m").replace(epochs=2, batch_size=32, image_size=SIZE)
    train, ev = build_transform("a_stl_m", SIZE, True), build_transform("a_stl_m", SIZE, False)
    seed_everything(0)
    model = build_model("resnet50", num_classes=3, n_attn=5)
    cx = data / "covidx-mini"
    start = time.time()
    try:
        res = fit(model, recipe, TrainConfig(out_dir=out / "stlm", seed=0, arch={**ARCH, "num_classes": 3}),
                  ds.load_dataset("covidx", cx, "train", train), None, ds.load_dataset("covidx", cx, "test", ev))
    except FinishedRunError:  # trained by an earlier call: score its checkpoint
        res = json.loads((out / "stlm" / "metrics.json").read_text())
    t_fit = time.time() - start
    model = handoff("resnet50", num_classes=3, n_attn=5, checkpoint=out / "stlm" / "last.pt", seed=0)
    target = DataLoader(covid_ct(data, "train", build_transform("eval", SIZE, False)), batch_size=32)
    scores = transferability_scores(collect(model.eval(), target))
    random_init = build_model("resnet50", num_classes=3, n_attn=5).eval()
    scores0 = transferability_scores(collect(random_init, target))
    rnd = {k: round(v, 4) for k, v in scores.items()}
    rnd0 = {k: round(v, 4) for k, v in scores0.items()}
    return (f"stl-m {t_fit:.0f}s covidx-mini test acc {res['test']['last']['accuracy']['value']:.3f}; "
            f"scores on COVID19-CT train: STL-M {rnd}, random init {rnd0}")


def check_explain(data: Path, out: Path) -> str:
    model = handoff("resnet50", num_classes=2, n_attn=5, checkpoint=out / "finetune" / "best.pt", seed=0)
    masks = ds.load_dataset("medseg", data / "medseg-covid", "all", build_transform("eval", SIZE, False))
    lines = []
    for method in ("gradcam", "attention"):
        sc = localisation_scores(model, masks, method=method, class_idx=1)
        means = sc[["pointing_game", "energy_inside", "iou_at_half"]].mean().round(3).to_dict()
        lines.append(f"{method} {means} mask area {float((sc.mask_pixels / SIZE ** 2).mean()):.3f}")
    return "explain: " + "; ".join(lines)


def _brief(res: dict) -> dict:
    m = res["test"]["best_val"]["covid_positive"]
    return {k: [round(m[k]["value"], 3), round(m[k]["low"], 3), round(m[k]["high"], 3)] for k in ("accuracy", "auc")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checks", nargs="+", help="finetune | ssl:<method> | stlm | explain")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("/tmp/covtl-realdata"))
    ap.add_argument("--lr", type=float, default=None,
                    help="SSL learning rate (default: the paper's, scaled linearly to batch 32)")
    args = ap.parse_args()
    if not (args.data / "covid-ct").is_dir():
        ap.error(f"no real data at {args.data}: pass --data pointing at the folder holding covid-ct/")
    for check in args.checks:
        name, _, method = check.partition(":")
        if name == "ssl" and method in SSL_RECIPE:
            print(check_ssl(args.data, args.out, method, args.lr), flush=True)
        elif name in ("finetune", "stlm", "explain") and not method:
            print({"finetune": check_finetune, "stlm": check_stlm, "explain": check_explain}[name](args.data, args.out),
                  flush=True)
        else:
            ap.error(f"unknown check {check!r}: use finetune, ssl:<{'|'.join(SSL_RECIPE)}>, stlm or explain")


if __name__ == "__main__":
    main()
