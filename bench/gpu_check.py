"""The paper profile on one GPU, in one short run: its training steps, its data path, the engine.

The paper profile is never trained here (no GPU). When a session is lent one, this script is
its whole check (the device tool gives minutes, so everything runs in one invocation, under a
time budget, most informative first):

1. **Steps.** Every distinct training step of ``build_plan("paper")`` (stage, FLOP kind,
   network, attention blocks, batch) at the recipe's own batch size and 224 px, the way
   :func:`covtl.train.fit` takes it on CUDA: channels-last, autocast, GradScaler, the recipe's
   optimiser and schedule. Per step: seconds (median of timed steps), images/s, peak GPU
   memory, and the achieved FLOP/s of the FLOP model (:mod:`covtl.compute`). A batch that does
   not fit is recorded as out of memory, not skipped silently. Random pixels: a step's cost
   does not depend on them.
2. **Data.** Each recipe's training transform (and the SSL views) on real COVID19-CT images
   (``--images``: a folder of them, decoded from file every time, so the figure is a floor),
   through a DataLoader with the workers the engine picks on CUDA
   (:func:`covtl.train.resolve_num_workers`) and with none; against the fastest GPU consumer
   of that transform from (1).
3. **Engine.** A smoke-profile fine-tune and a region-MoCo SSTL-M stage end to end on CUDA, on
   the tiny synthetic data root (checkpoints, validation, test scoring and records included).

Writes one JSON record (``--out``, default ``results/gpu/paper-steps.json``) with its
provenance; the compute chapter turns (1) into GPU-hours per table. Asserts nothing.

    python bench/gpu_check.py --images DIR [--out FILE] [--budget 300] [--steps 4]
    python bench/gpu_check.py --device cpu --size 32 --batch-cap 2 --budget 20   # dry run on CPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from covtl.compute import FLOP_FACTORS, flop_factor, flops_per_image, step_key
from covtl.data.transforms import build_transform
from covtl.models import build_model
from covtl.provenance import provenance
from covtl.recipes import get_recipe
from covtl.ssl import build_ssl
from covtl.stages import _SSLViews
from covtl.study import build_plan
from covtl.train import (
    Classification,
    _autocast,
    _set_train_mode,
    _trainable,
    build_optimizer,
    build_scheduler,
    resolve_num_workers,
    steps_per_epoch,
)

NUM_CLASSES = {"stl_n": 1000, "stl_m": 3, "finetune": 2, "sstl_m": 2}
#: which cases run first when the budget cannot hold them all
_PRIORITY = {("resnet50", 0): 0, ("resnet18", 0): 1, ("resnet50", 5): 2, ("resnet101", 0): 3}


def step_cases() -> list[dict[str, Any]]:
    """Distinct training steps of the paper plan, most informative first."""
    cases: dict[str, dict[str, Any]] = {}
    for run in build_plan("paper").runs:
        p = dict(run.params)
        if run.notebook not in NUM_CLASSES:
            continue
        recipe = get_recipe(p["recipe"])
        factor = flop_factor(run.notebook, p, recipe)
        key = step_key(run.notebook, factor, p["backbone"], p.get("n_attn", 0), recipe.batch_size)
        cases.setdefault(key, {"notebook": run.notebook, "factor": factor, "backbone": p["backbone"],
                               "n_attn": p.get("n_attn", 0), "batch": recipe.batch_size, "recipe": p["recipe"],
                               "method": p.get("method", ""), "region_weight": p.get("region_weight")})
    first_of_kind: set[tuple] = set()
    order = []
    for case in cases.values():  # one case of every (stage, kind) first, then by network
        kind = (case["notebook"], case["factor"])
        rank = 0 if kind not in first_of_kind and case["n_attn"] == 0 else 1
        first_of_kind.add(kind)
        order.append((rank, _PRIORITY.get((case["backbone"], case["n_attn"]), 9), case["batch"], case))
    return [c for *_, c in sorted(order, key=lambda x: x[:3])]


def _images(folder: Path | None, n: int = 4) -> list[Image.Image]:
    files = sorted(folder.iterdir())[:n] if folder else []
    if files:
        return [Image.open(f).convert("RGB") for f in files]
    return [Image.new("RGB", (320, 320), (40 * i, 90, 160)) for i in range(n)]  # no sample: flat images


def _batch(case: dict[str, Any], size: int, batch: int, images: list[Image.Image], device) -> dict[str, Any]:
    recipe = get_recipe(case["recipe"])
    if case["notebook"] == "sstl_m":
        regions = case["method"] == "a_region_moco" and (case["region_weight"] is None or case["region_weight"] > 0)
        views = _SSLViews(recipe.augment, size, regions=regions)
        per = [views(im) for im in images]
        out = []
        for i in range(len(per[0])):
            v = torch.stack([p[i] for p in per])
            out.append(v.repeat(-(-batch // len(per)), *[1] * (v.dim() - 1))[:batch].to(device))
        return {"image": out}
    x = torch.randn(batch, 3, size, size, device=device)
    return {"image": x, "label": torch.randint(0, NUM_CLASSES[case["notebook"]], (batch,), device=device)}


def time_step(case: dict[str, Any], size: int, batch_cap: int | None, steps: int, images, device) -> dict[str, Any]:
    """One case's step as fit() takes it; seconds per step and what it achieved."""
    recipe = get_recipe(case["recipe"])
    batch = min(case["batch"], batch_cap or case["batch"])
    out = {**case, "size": size, "batch_timed": batch}
    torch.manual_seed(0)
    task = model = None
    try:
        model = build_model(case["backbone"], num_classes=NUM_CLASSES[case["notebook"]], n_attn=case["n_attn"],
                            dropout=recipe.dropout)
        if case["notebook"] == "sstl_m":
            overrides = {"alpha2": float(case["region_weight"])} if case["region_weight"] is not None else {}
            task = build_ssl(case["method"], model, **overrides)
        else:
            task = Classification(model, rotation_aux=recipe.rotation_aux)
        task.to(device)
        if device.type == "cuda":
            task.to(memory_format=torch.channels_last)
        opt = build_optimizer(_trainable(task, recipe), recipe)
        sched = build_scheduler(opt, recipe, steps_per_epoch(10 * batch, recipe, full_batches=True))
        scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        data = _batch(case, size, batch, images, device)
        _set_train_mode(task, recipe)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for i in range(steps + 2):  # two warm-up steps
            t0 = time.perf_counter()
            with _autocast(device):
                loss = task(data)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            float(loss.detach())  # fit() reads the loss every step (a sync)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        s = statistics.median(times)
        fwd = flops_per_image(case["backbone"], case["n_attn"], size, NUM_CLASSES[case["notebook"]])
        out.update(s_per_step=s, images_per_s=batch / s,
                   achieved_tflops=FLOP_FACTORS[case["factor"]] * fwd * batch / s / 1e12,
                   peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None)
    except torch.OutOfMemoryError:
        out.update(oom=True)
    except Exception as err:  # noqa: BLE001 - recorded and reported; the other cases still run
        out.update(error=f"{type(err).__name__}: {err}", trace=traceback.format_exc(limit=3))
    finally:
        del task, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


class _Files(Dataset):
    def __init__(self, files: list[Path], transform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return self.transform(Image.open(self.files[i]).convert("RGB"))


def data_rate(folder: Path, augment: str, size: int, views: bool, regions: bool, workers: int,
              passes: int = 3) -> float:
    """Training images/s of one transform (decoded from file every time) through a DataLoader."""
    tf = _SSLViews(augment, size, regions) if views else build_transform(augment, size, train=True)
    files = sorted(folder.iterdir())
    loader = DataLoader(_Files(files, tf), batch_size=32, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    for _ in loader:  # warm-up pass: workers started, files in the page cache
        break
    n, t0 = 0, time.perf_counter()
    for _ in range(passes):
        for b in loader:
            n += (b[0] if isinstance(b, list) else b).shape[0]
    return n / (time.perf_counter() - t0)


def engine_check(device: torch.device) -> dict[str, Any]:
    """A smoke fine-tune and a region-MoCo SSTL-M stage end to end on ``device``, tiny synthetic data."""
    from covtl.data.synth import generate
    from covtl.stages import StageConfig, finetune_stage, ssl_stage

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp) / "data", scale="tiny", parts=("covid-ct",), workers=8)
        out["synth_s"] = time.perf_counter() - t0
        for name, call in (
            ("finetune b_transfer resnet50", lambda c: finetune_stage(c, "b_transfer")),
            ("sstl_m a_region_moco resnet50 5 ATTNs", lambda c: ssl_stage(c, "a_region_moco", "a_sstl_m")),
        ):
            n_attn = 5 if "ATTN" in name else 0
            cfg = StageConfig(profile="smoke", data_root=str(Path(tmp) / "data"), backbone="resnet50",
                              n_attn=n_attn, out_dir=str(Path(tmp) / name.replace(" ", "-")), device=str(device))
            t0 = time.perf_counter()
            try:
                rec = call(cfg)
                out[name] = {"ok": True, "s": time.perf_counter() - t0,
                             "device": rec.get("provenance", {}).get("device"),
                             "files": sorted(p.name for p in Path(cfg.out_dir).iterdir())}
            except Exception as err:  # noqa: BLE001 - the check reports, the other stage still runs
                out[name] = {"ok": False, "error": f"{type(err).__name__}: {err}",
                             "trace": traceback.format_exc(limit=4)}
    return out


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192, reps: int = 10) -> float:
    n = n if device.type == "cuda" else 512
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, default=None, help="a folder of COVID19-CT images (data rate)")
    ap.add_argument("--out", type=Path, default=Path("results/gpu/paper-steps.json"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-cap", type=int, default=None, help="cap every batch (a CPU dry run)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--budget", type=float, default=300, help="seconds for part 1; later cases are left out")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--commit", default="", help="the commit checked out (a copy without .git cannot tell)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = False  # as the engine leaves it
    record: dict[str, Any] = {
        "what": "bench/gpu_check.py: the paper profile's training steps, data rate and engine on one device",
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__, "size": args.size, "batch_cap": args.batch_cap,
        "provenance": {**provenance(seed=0, device=str(device)), **({"commit": args.commit} if args.commit else {})},
        "matmul_tflops": {"fp16": matmul_tflops(device, torch.float16 if device.type == "cuda" else torch.float32),
                          "fp32": matmul_tflops(device, torch.float32)},
    }
    print(json.dumps({k: record[k] for k in ("device_name", "torch", "matmul_tflops")}), flush=True)

    def save() -> None:  # after every part: a run stopped at its time limit keeps what it measured
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(args.out)

    images = _images(args.images)
    steps, t_start = [], time.perf_counter()
    cases = step_cases()
    for case in cases:
        if time.perf_counter() - t_start > args.budget:
            steps.append({**case, "left_out": "time budget"})
            continue
        r = time_step(case, args.size, args.batch_cap, args.steps, images, device)
        steps.append(r)
        what = (f"{r['s_per_step']:.3f} s/step {r['images_per_s']:8.0f} img/s {r['achieved_tflops']:6.1f} TFLOP/s "
                f"peak {r['peak_gib'] or 0:.1f} GiB") if "s_per_step" in r else (
                "OUT OF MEMORY" if r.get("oom") else r.get("error"))
        print(f"{case['notebook']:8} {case['factor']:14} {case['backbone']:16} a{case['n_attn']} "
              f"b{r['batch_timed']:<4} {what}", flush=True)
        record["steps"] = steps
        save()
    record["steps"] = steps
    record["steps_s"] = time.perf_counter() - t_start

    record["data"] = []
    if args.images:
        workers = resolve_num_workers(-1, device)
        fastest: dict[str, float] = {}
        for r in steps:
            if "images_per_s" in r:
                aug = get_recipe(r["recipe"]).augment
                fastest[aug] = max(fastest.get(aug, 0.0), r["images_per_s"])
        for aug, views, regions in (("a_finetune", False, False), ("b_supervised", False, False),
                                    ("a_stl_m", False, False), ("a_sstl_m", True, True), ("b_moco_v2", True, False)):
            for w in dict.fromkeys((workers, 0)):
                rate = data_rate(args.images, aug, args.size, views, regions, w)
                row = {"augment": aug, "workers": w, "images_per_s": rate, "gpu_images_per_s": fastest.get(aug)}
                record["data"].append(row)
                save()
                print(f"data {aug:12} workers {w}: {rate:7.0f} img/s; fastest GPU consumer "
                      f"{fastest.get(aug, float('nan')):7.0f} img/s", flush=True)
    if not args.skip_engine:
        record["engine"] = engine_check(device)
        print(json.dumps(record["engine"], default=str)[:3000], flush=True)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
