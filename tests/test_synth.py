"""The embedded synthetic dataset: layouts, counts, splits, determinism, masks, disease model."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from covtl.data import synth
from covtl.data.synth import LOBE_BOXES, LOBES, NATURAL_NAME, SCALES, generate

TINY = SCALES["tiny"]
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """The tiny synthetic data root, seed 0, two worker processes."""
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, seed=0, scale="tiny", workers=2)
    return out


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line]


def _covid_metainfo(path: Path) -> list[list[str]]:
    """Rows (A..D, "" when empty) of the COVID MetaInfo workbook, read with the standard library."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as zf:
        strings = ["".join(t.text or "" for t in si.iter(f"{{{ns['m']}}}t"))
                   for si in ElementTree.fromstring(zf.read("xl/sharedStrings.xml")).findall("m:si", ns)]
        sheet = ElementTree.fromstring(zf.read("xl/worksheets/sheet1.xml"))
        assert 'name="positive_captions"' in zf.read("xl/workbook.xml").decode()
    rows = []
    for row in sheet.find("m:sheetData", ns).findall("m:row", ns):
        cells = {c.get("r")[0]: strings[int(c.find("m:v", ns).text)] for c in row.findall("m:c", ns)}
        rows.append([cells.get(col, "") for col in "ABCD"])
    return rows


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


# --------------------------------------------------------------------------------------------
# layouts and formats
# --------------------------------------------------------------------------------------------

def test_covid_ct_layout_and_formats(tiny):
    base = tiny / "covid-ct"
    covid = sorted(p.name for p in (base / "Images-processed" / "CT_COVID").iterdir())
    noncovid = sorted(p.name for p in (base / "Images-processed" / "CT_NonCOVID").iterdir())
    assert covid and all(name.endswith(".png") for name in covid)
    assert noncovid and all(re.fullmatch(r"\d+(%\d+)?\.jpg|\d+\.png", name) for name in noncovid)
    for cls in ("COVID", "NonCOVID"):
        for split in SPLITS:
            text = (base / "Data-split" / cls / f"{split}CT_{cls}.txt").read_text()
            # as in the real data, only the COVID train and val lists lack the final newline
            assert text.endswith("\n") == (cls == "NonCOVID" or split == "test")
            assert all(" " not in name and "," not in name for name in text.splitlines())
    for split in SPLITS:
        rows = _csv_rows(base / "Data-split" / "NonCOVID" / f"CT_NonCOVID_{split}_id.csv")
        assert rows[0] == ["", "patient id"]
        assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))
        assert all(re.fullmatch(r"(crawled|medpix)_patient_\d+", r[1]) for r in rows[1:])
    # NonCOVID MetaInfo: CSV text despite the .xlsx name
    meta = _csv_rows(base / "NonCOVID-CT-MetaInfo.xlsx")
    assert meta[0] == ["", "image name", "patient id"]
    assert sorted(r[1] for r in meta[1:]) == noncovid
    # COVID MetaInfo: a real xlsx, no header, file name / "Patient n" / DOI / caption, quirks kept
    assert zipfile.is_zipfile(base / "COVID-CT-MetaInfo.xlsx")
    rows = _covid_metainfo(base / "COVID-CT-MetaInfo.xlsx")
    assert rows[-1][:3] == ["", "", ""] and rows[-1][3]  # trailing caption-only row
    names = [r[0] for r in rows[:-1]]
    assert all(re.fullmatch(r"Patient \d+", r[1]) for r in rows[:-1])
    assert sorted(n if n.endswith(".png") else n + ".png" for n in names) == covid
    assert any("%" in name for name in covid)


def test_other_layouts(tiny):
    for split in ("train", "test"):
        for line in _lines(tiny / "covidx-mini" / f"{split}.txt"):
            patient, name, label, source = line.split(" ")
            assert label in ("COVID-19", "pneumonia", "normal") and source == "synth"
            assert (tiny / "covidx-mini" / split / name).is_file()
    slices = sorted(p.name for p in (tiny / "lung-ct-unlabeled" / "slices").iterdir())
    assert slices and all(re.fullmatch(r".+_\d+\.jpg", name) for name in slices)
    images = sorted(p.stem for p in (tiny / "medseg-covid" / "images").iterdir())
    masks = sorted(p.stem for p in (tiny / "medseg-covid" / "masks").iterdir())
    assert images == masks == sorted(str(i) for i in range(TINY.medseg_pairs))
    assert all((tiny / "medseg-covid" / "images" / f"{n}.jpg").is_file() for n in images)
    nat = tiny / "natural" / NATURAL_NAME
    table = _lines(nat / "classes.tsv")
    assert [line.split("\t")[0] for line in table] == [str(i) for i in range(TINY.natural_classes)]
    wnids = [line.split("\t")[1] for line in table]
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids) and all(line.count("\t") == 2 for line in table)
    assert sorted(p.name for p in (nat / "train").iterdir()) == sorted(wnids)
    assert all(re.fullmatch(rf"{w}_\d+\.JPEG", p.name) for w in wnids for p in (nat / "train" / w).iterdir())
    assert all(re.fullmatch(r"val_\d+\.JPEG", p.name) for w in wnids for p in (nat / "val" / w).iterdir())


def test_sha256sums_and_manifest(tiny):
    for folder in ("covid-ct", "covidx-mini", "lung-ct-unlabeled", "medseg-covid", f"natural/{NATURAL_NAME}"):
        root = tiny / folder
        listed = {}
        for line in _lines(root / "SHA256SUMS"):
            digest, name = line.split("  ./")
            listed[name] = digest
        actual = {k: v for k, v in _digests(root).items() if k != "SHA256SUMS"}
        assert listed == actual
    manifest = json.loads((tiny / "SYNTHETIC.json").read_text())
    assert manifest["seed"] == 0 and manifest["scale"] == "tiny"
    assert manifest["version"] == synth.GENERATOR_VERSION and "seconds" not in manifest
    assert manifest["lobe_boxes"] == {k: list(v) for k, v in LOBE_BOXES.items()}
    index = _csv_rows(tiny / "SYNTHETIC-index.csv")
    assert index[0][:3] == ["part", "file", "split"]
    assert all((tiny / row[1]).is_file() for row in index[1:])


def test_every_image_decodes(tiny):
    n = 0
    for path in tiny.rglob("*"):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as im:
                im.load()
                assert im.mode in ("L", "RGB", "RGBA") and min(im.size) >= 32
            n += 1
    tiny_total = (sum(TINY.covid) + sum(TINY.noncovid) + sum(TINY.cxr_train) + sum(TINY.cxr_test)
                  + TINY.volumes * TINY.volume_slices + 2 * TINY.medseg_pairs
                  + TINY.natural_classes * (TINY.natural_train + TINY.natural_val))
    assert n == tiny_total


def test_loaders_read_the_synthetic_root(tiny):
    datasets = pytest.importorskip("covtl.data.datasets")
    ct = datasets.load_dataset("covid-ct", datasets.locate(tiny, "covid-ct"), "train")
    assert len(ct) == TINY.covid[0] + TINY.noncovid[0] and ct.n_fallback_groups == 0
    assert len(datasets.load_dataset("natural", datasets.locate(tiny, "natural"), "val")) == (
        TINY.natural_classes * TINY.natural_val)


# --------------------------------------------------------------------------------------------
# counts and splits
# --------------------------------------------------------------------------------------------

def test_counts_per_split_and_class(tiny):
    base = tiny / "covid-ct" / "Data-split"
    for cls, counts in (("COVID", TINY.covid), ("NonCOVID", TINY.noncovid)):
        assert tuple(len(_lines(base / cls / f"{s}CT_{cls}.txt")) for s in SPLITS) == counts
        folder = tiny / "covid-ct" / "Images-processed" / f"CT_{cls}"
        assert sum(1 for _ in folder.iterdir()) == sum(counts)
    for split, counts in (("train", TINY.cxr_train), ("test", TINY.cxr_test)):
        labels = [line.split()[2] for line in _lines(tiny / "covidx-mini" / f"{split}.txt")]
        assert tuple(labels.count(lab) for lab in synth.CXR_LABELS) == counts
    slices = [p.name.rpartition("_")[0] for p in (tiny / "lung-ct-unlabeled" / "slices").iterdir()]
    assert len(set(slices)) == TINY.volumes and len(slices) == TINY.volumes * TINY.volume_slices
    nat = tiny / "natural" / NATURAL_NAME
    for split, n in (("train", TINY.natural_train), ("val", TINY.natural_val)):
        assert all(sum(1 for _ in d.iterdir()) == n for d in (nat / split).iterdir())


def test_patient_level_splits(tiny):
    base = tiny / "covid-ct"
    patient = {}
    for name, pid, _doi, _caption in _covid_metainfo(base / "COVID-CT-MetaInfo.xlsx")[:-1]:
        patient[name if name.endswith(".png") else name + ".png"] = pid
    split_of: dict[str, str] = {}
    for split in SPLITS:
        for name in _lines(base / "Data-split" / "COVID" / f"{split}CT_COVID.txt"):
            assert split_of.setdefault(patient[name], split) == split, f"COVID {patient[name]} in two splits"
    noncovid = {r[1]: r[2] for r in _csv_rows(base / "NonCOVID-CT-MetaInfo.xlsx")[1:]}
    ids = {s: {r[1] for r in _csv_rows(base / "Data-split" / "NonCOVID" / f"CT_NonCOVID_{s}_id.csv")[1:]}
           for s in SPLITS}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    for split in SPLITS:
        names = _lines(base / "Data-split" / "NonCOVID" / f"{split}CT_NonCOVID.txt")
        assert {noncovid[n] for n in names} == ids[split]
    cxr = {s: {line.split()[0] for line in _lines(tiny / "covidx-mini" / f"{s}.txt")}
           for s in ("train", "test")}
    assert not cxr["train"] & cxr["test"]


# --------------------------------------------------------------------------------------------
# determinism and safety
# --------------------------------------------------------------------------------------------

def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
    again = tmp_path / "again"
    generate(again, seed=0, scale="tiny", workers=1)
    assert _digests(again) == _digests(tiny)


def test_different_seed_different_bytes(tiny, tmp_path):
    other = tmp_path / "other"
    generate(other, seed=1, scale="tiny", parts=["covid-ct", "medseg-covid"])
    a, b = _digests(tiny), _digests(other)
    images = [k for k in b if k.endswith((".png", ".jpg"))]
    assert images and all(a.get(k) != b[k] for k in images)


def test_refuses_a_non_empty_folder_and_overwrites_atomically(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate(out, scale="tiny", parts=["medseg-covid"])
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # untouched
    generate(out, scale="tiny", parts=["medseg-covid"], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["SYNTHETIC-index.csv", "SYNTHETIC.json", "medseg-covid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary siblings left
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate(tmp_path / "file", scale="tiny")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'huge'"):
        generate("/nonexistent/x", scale="huge")
    with pytest.raises(ValueError, match="mri"):
        generate("/nonexistent/x", parts=["mri"])
    with pytest.raises(ValueError, match="'flu'"):
        synth.sample_ct_patient(np.random.default_rng(0), "flu")
    with pytest.raises(ValueError, match="'SARS'"):
        synth.render_cxr(np.random.default_rng(0), label="SARS")


# --------------------------------------------------------------------------------------------
# images, masks and the disease model
# --------------------------------------------------------------------------------------------

def test_medseg_masks_are_binary_non_empty_and_aligned(tiny):
    for mask_path in (tiny / "medseg-covid" / "masks").iterdir():
        mask = np.asarray(Image.open(mask_path))
        image = Image.open(tiny / "medseg-covid" / "images" / f"{mask_path.stem}.jpg")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        assert mask.shape == (image.height, image.width)
        assert np.asarray(image.convert("L"))[mask == 255].mean() > 10  # lesions lie on the body


def test_render_ct_slice_outputs():
    rng = np.random.default_rng(0)
    patient = synth.sample_ct_patient(rng, "covid", size=96)
    sl = synth.render_ct_slice(rng, patient, level=0.7)
    h, w = patient.height, patient.width
    assert sl.image.shape == sl.lesion.shape == sl.lobes.shape == (h, w)
    assert sl.image.dtype == np.uint8 and sl.lesion.dtype == bool and sl.lobes.dtype == np.int8
    assert set(np.unique(sl.lobes)) <= {-1, 0, 1, 2, 3, 4} and (sl.lobes >= 0).mean() > 0.1
    assert not (sl.lesion & (sl.lobes < 0)).any()  # lesions lie inside the lungs
    x0, y0, x1, y1 = sl.info["body_box"]
    assert sl.image[:y0].max(initial=0) == 0 and sl.image[y1 + 1:].max(initial=0) == 0  # constant background
    assert np.array_equal(synth.render_ct_slice(np.random.default_rng(5), patient, level=0.7).image,
                          synth.render_ct_slice(np.random.default_rng(5), patient, level=0.7).image)


def test_covid_lesions_are_lower_lobe_peripheral_and_bilateral():
    """The disease model of the module docstring, measured on rendered slices."""
    rng = np.random.default_rng(11)
    lesion_low, lung_low, lesion_rim, lung_rim, bilateral = [], [], [], [], []
    for _ in range(30):
        patient = synth.sample_ct_patient(rng, "covid", size=128)
        level = synth._slice_levels(rng, patient, 1)[0]
        sl = synth._ensure_lesion(rng, patient, level, 10)
        lung = sl.lobes >= 0
        lower = np.isin(sl.lobes, (2, 4))  # rl, ll
        dist = synth.pleura_distance(lung)
        rim = dist < dist.max() / 3  # outer third of the lung
        lesion_low.append(lower[sl.lesion].mean())
        lung_low.append(lower[lung].mean())
        lesion_rim.append(rim[sl.lesion].mean())
        lung_rim.append(rim[lung].mean())
        bilateral.append((sl.lesion & (sl.lobes <= 2) & lung).any() and (sl.lesion & (sl.lobes >= 3)).any())
    assert np.mean(lesion_low) > 0.7 and np.mean(lesion_low) > np.mean(lung_low) + 0.12
    assert np.mean(lesion_rim) > 0.7 and np.mean(lesion_rim) > np.mean(lung_rim) + 0.1
    assert np.mean(bilateral) > 0.5


def test_central_ggo_negatives_are_not_peripheral():
    rng = np.random.default_rng(3)
    rims = []
    for _ in range(10):
        patient = synth.sample_ct_patient(rng, "perihilar", size=128)
        sl = synth.render_ct_slice(rng, patient, level=patient.lesions[0].z)
        lung = sl.lobes >= 0
        dist = synth.pleura_distance(lung)
        if sl.lesion.any():
            rims.append((dist < dist.max() / 3)[sl.lesion].mean())
    assert rims and np.mean(rims) < 0.5


def test_lobe_map_matches_the_documented_boxes():
    rng = np.random.default_rng(2)
    inside = {k: [] for k in LOBES}
    for _ in range(25):
        patient = synth.sample_ct_patient(rng, "normal", size=128)
        sl = synth.render_ct_slice(rng, patient, level=rng.uniform(0.3, 0.9))
        x0, y0, x1, y1 = sl.info["lung_box"]
        for k, name in enumerate(LOBES):
            ys, xs = np.nonzero(sl.lobes == k)
            if len(ys) < 20:
                continue
            u, v = (xs - x0 + 0.5) / (x1 - x0 + 1), (ys - y0 + 0.5) / (y1 - y0 + 1)
            cx, cy, bw, bh = LOBE_BOXES[name]
            # the box grown by 0.1 on each side holds most of the lobe
            inside[name].append(((abs(u - cx) < bw / 2 + 0.1) & (abs(v - cy) < bh / 2 + 0.1)).mean())
    for name, fractions in inside.items():
        assert fractions and np.mean(fractions) > 0.75, name
    # anatomy: right lobes on the image left, upper lobes in front of lower lobes
    assert LOBE_BOXES["ru"][0] < 0.5 < LOBE_BOXES["lu"][0]
    assert LOBE_BOXES["ru"][1] < LOBE_BOXES["rm"][1] < LOBE_BOXES["rl"][1]
    assert LOBE_BOXES["lu"][1] < LOBE_BOXES["ll"][1]


def test_cxr_and_fractal_renderers():
    rng = np.random.default_rng(0)
    normal = synth.render_cxr(rng, label="normal", size=96)
    covid = synth.render_cxr(rng, label="COVID-19", size=96)
    assert normal.image.dtype == np.uint8 and normal.image.shape[0] == 96 and not normal.lesion.any()
    assert covid.lesion.any()
    maps, probs = synth.ifs_system(rng)
    assert np.isclose(probs.sum(), 1) and maps.shape[1] == 6
    images = synth.render_fractals(rng, maps, probs, 3, size=32)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 5


def test_region_task_locates_the_synthetic_lungs():
    """Paper A's locate step (covtl.regions) finds the lung box the generator drew."""
    regions = pytest.importorskip("covtl.regions")
    rng = np.random.default_rng(4)
    for finding in ("normal", "covid", "lobar", "dependent"):
        patient = synth.sample_ct_patient(rng, finding, size=160)
        sl = synth.render_ct_slice(rng, patient, level=0.6)
        found = regions.lung_box(sl.image.astype(np.float32) / 255)
        x0, y0, x1, y1 = sl.info["lung_box"]
        inter = (max(0, min(x1 + 1, found.right) - max(x0, found.left))
                 * max(0, min(y1 + 1, found.bottom) - max(y0, found.top)))
        area = (found.right - found.left) * (found.bottom - found.top)
        union = (x1 + 1 - x0) * (y1 + 1 - y0) + area - inter
        assert found.found and inter / union > 0.8, finding
