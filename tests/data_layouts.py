"""Tiny fixture datasets written in the real published layouts (see ../shared/data/README.md).

Each ``write_*`` function builds one dataset folder of a few ~32 px images under ``root`` and
returns it. The fixtures carry the real quirks a loader must survive: a ``.png`` holding JPEG
bytes, RGBA and L images, ``%`` in names, a name over 150 characters, an xlsx MetaInfo with no
header row (written with the standard library; openpyxl is not a dependency), names in it
without extension and ids with trailing spaces, a CSV-text ``.xlsx``, a split list without a
final newline and one with CRLF line ends.

Import from tests as ``from data_layouts import ...`` (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

__all__ = [
    "COVID_CT_FILES",
    "LONG_NAME",
    "picture",
    "write_covid_ct",
    "write_covidx",
    "write_data_root",
    "write_image",
    "write_medseg",
    "write_natural",
    "write_unlabeled_ct",
    "write_xlsx",
]

#: a real-style COVID file name over 150 characters, with a "%"
LONG_NAME = ("impact_of_covid19_infection_on_pregnancy_outcomes_and_the_risk_of_maternaltoneonatal_"
             "intrapartum_transmission_of_covid19_during_natural_birth-p8-41%3.png")

#: COVID19-CT fixture: class -> split -> [(file name, patient id, how the file is written)]
COVID_CT_FILES = {
    "COVID": {
        "train": [("2020.01.24.919183-p27-132.png", "Patient 1", "rgba-png"),
                  ("2020.01.24.919183-p27-133.png", "Patient 1", "jpeg-as-png"),
                  (LONG_NAME, "Patient 2", "l-png")],
        "val": [("kjr-21-e24-p5-29.png", "Patient 3", "rgb-png")],
        "test": [("PIIS0140673620303603%1.png", "Patient 4", "rgb-png"),
                 ("bmj.m606.full-p4-22%0.png", "Patient 5", "jpeg-as-png")],
    },
    "NonCOVID": {
        "train": [("0.jpg", "crawled_patient_0", "rgb-jpeg"),
                  ("1%0.jpg", "crawled_patient_1", "l-jpeg"),
                  ("1%1.jpg", "crawled_patient_1", "rgb-jpeg")],
        "val": [("12.png", "medpix_patient_12", "rgb-png")],
        "test": [("13.png", "medpix_patient_13", "rgb-png"),
                 ("14%0.jpg", "crawled_patient_14", "rgb-jpeg")],
    },
}


def picture(seed: int, size: int = 32) -> Image.Image:
    """A smooth random greyscale picture (8x8 noise upsampled): distinct seeds look distinct."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (8, 8)).astype(np.uint8)
    return Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC)


def write_image(path: Path, seed: int, kind: str = "rgb-png", size: int = 32) -> Path:
    """Write ``picture(seed)`` as ``kind``: "{rgb,rgba,l}-{png,jpeg}" or "jpeg-as-png" (any name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = picture(seed, size)
    if kind == "jpeg-as-png":
        kind = "rgb-jpeg"
    mode, fmt = kind.split("-")
    if mode == "l":
        image = grey
    elif mode == "rgb":
        image = Image.merge("RGB", (grey, grey, grey.point(lambda v: v * 3 // 4)))
    elif mode == "rgba":
        image = Image.merge("RGBA", (grey, grey, grey, Image.new("L", grey.size, 255)))
    else:
        raise ValueError(f"unknown image kind {kind!r}")
    image.save(path, format={"png": "PNG", "jpeg": "JPEG"}[fmt])
    return path


# --------------------------------------------------------------------------------------------
# a minimal xlsx writer (shared or inline strings, numbers)
# --------------------------------------------------------------------------------------------

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006/relationships"


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def write_xlsx(path: Path, rows: list[list[str | int | None]], inline: bool = False) -> Path:
    """Write ``rows`` as the single sheet of an xlsx workbook; ``None`` leaves a cell out."""
    shared: list[str] = []
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{_column_letters(c)}{r}"
            if value is None:
                continue
            if isinstance(value, int):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif inline:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
            else:
                shared.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(shared) - 1}</v></c>')
        xml_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    sheet = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{_MAIN}">'
             f'<sheetData>{"".join(xml_rows)}</sheetData></worksheet>')
    strings = "".join(f"<si><t>{escape(s)}</t></si>" for s in shared)
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/'
            '2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-'
            'package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-'
            'officedocument.spreadsheetml.sharedStrings+xml"/></Types>'),
        "_rels/.rels": (f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG}">'
                        f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/>'
                        '</Relationships>'),
        "xl/workbook.xml": (f'<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{_MAIN}" '
                            f'xmlns:r="{_REL}"><sheets><sheet name="positive_captions" sheetId="1" '
                            'r:id="rId1"/></sheets></workbook>'),
        "xl/_rels/workbook.xml.rels": (
            f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{_PKG}">'
            f'<Relationship Id="rId1" Type="{_REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_REL}/sharedStrings" Target="sharedStrings.xml"/>'
            '</Relationships>'),
        "xl/worksheets/sheet1.xml": sheet,
        "xl/sharedStrings.xml": (f'<?xml version="1.0" encoding="UTF-8"?><sst xmlns="{_MAIN}" '
                                 f'count="{len(shared)}" uniqueCount="{len(shared)}">{strings}</sst>'),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as book:
        for name, text in parts.items():
            book.writestr(name, text)
    return path


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    """pandas ``to_csv`` style: an unnamed index column first."""
    buffer = io.StringIO()
    buffer.write("," + ",".join(header) + "\n")
    for i, row in enumerate(rows):
        buffer.write(f"{i}," + ",".join(row) + "\n")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# the five layouts
# --------------------------------------------------------------------------------------------

def write_covid_ct(root: Path, *, shared_patient: bool = False, unlisted_image: bool = False,
                   duplicate_across_splits: bool = False) -> Path:
    """COVID19-CT in the official UCSD layout: 6 COVID and 6 NonCOVID images over train/val/test.

    Args:
        shared_patient: plant one patient in two splits per class: COVID "Patient 1" also
            in test, NonCOVID "crawled_patient_1" also in val (MetaInfo and id files).
        unlisted_image: add a COVID test image that has no row in the MetaInfo workbook.
        duplicate_across_splits: the COVID test image "PIIS...%1.png" becomes a resized,
            re-encoded copy of the NonCOVID train image "0.jpg" (a cross-split leak).
    """
    files = {cls: {split: list(entries) for split, entries in splits.items()}
             for cls, splits in COVID_CT_FILES.items()}
    if unlisted_image:
        files["COVID"]["test"].append(("2020.03.25.20043166-p17-79.png", "", "rgb-png"))
    patients = {(cls, name): patient for cls in files for split in files[cls]
                for name, patient, _ in files[cls][split]}
    if shared_patient:
        patients["COVID", "PIIS0140673620303603%1.png"] = "Patient 1"
        patients["NonCOVID", "12.png"] = "crawled_patient_1"
    seed = 0
    for cls, splits in files.items():
        for split, entries in splits.items():
            for name, _, kind in entries:
                seed += 1
                write_image(root / "Images-processed" / f"CT_{cls}" / name, seed, kind)
            listing = [name for name, _, _ in entries]
            newline = "\r\n" if (cls, split) == ("NonCOVID", "test") else "\n"
            text = newline.join(listing)  # no final newline, as in the real lists
            (root / "Data-split" / cls).mkdir(parents=True, exist_ok=True)
            (root / "Data-split" / cls / f"{split}CT_{cls}.txt").write_bytes(text.encode())
    if duplicate_across_splits:
        original = Image.open(root / "Images-processed" / "CT_NonCOVID" / "0.jpg").convert("RGB")
        original.resize((40, 40), Image.Resampling.BILINEAR).save(
            root / "Images-processed" / "CT_COVID" / "PIIS0140673620303603%1.png", format="PNG")

    # COVID MetaInfo: a real xlsx, no header, (file, patient, DOI, caption); quirks as published
    covid_rows: list[list[str | int | None]] = []
    for split in ("train", "val", "test"):
        for name, _, _ in files["COVID"][split]:
            patient = patients["COVID", name]
            if not patient:
                continue
            if name.startswith("kjr"):
                name = name.removesuffix(".png")  # some MetaInfo names lack the extension
            if patient == "Patient 2":
                patient += " "  # and some ids carry a trailing space
            covid_rows.append([name, patient, None, f"['Figure 1. CT of {patient.strip()}.']"])
    covid_rows.append([None, None, None, "NTM, nontuberculous mycobacterium. "])  # caption continuation
    write_xlsx(root / "COVID-CT-MetaInfo.xlsx", covid_rows)

    # NonCOVID MetaInfo: CSV text under an .xlsx name
    noncovid = [[name, patients["NonCOVID", name]] for split in ("train", "val", "test")
                for name, _, _ in files["NonCOVID"][split]]
    (root / "NonCOVID-CT-MetaInfo.xlsx").write_text(_csv_text(["image name", "patient id"], noncovid))
    for split in ("train", "val", "test"):
        ids = sorted({patients["NonCOVID", name] for name, _, _ in files["NonCOVID"][split]})
        (root / "Data-split" / "NonCOVID" / f"CT_NonCOVID_{split}_id.csv").write_text(
            _csv_text(["patient id"], [[i] for i in ids]))
    return root


def write_covidx(root: Path) -> Path:
    """COVIDx format: train.txt (4 images, 3 classes, 3 patients) and test.txt (2 images)."""
    lists = {
        "train": [("actmed-ANON1", "CR.1.2.840.113564.1.png", "normal", "actmed", "rgb-png"),
                  ("cohen-17", "000001-6.jpg", "COVID-19", "cohen", "l-jpeg"),
                  ("cohen-17", "000001-7.png", "COVID-19", "cohen", "jpeg-as-png"),
                  ("cohen-22", "pneumonia-22.jpg", "pneumonia", "cohen", "rgb-jpeg")],
        "test": [("fig1-COVID-00043b", "COVID-00043b.jpg", "COVID-19", "fig1", "rgb-jpeg"),
                 ("actmed-ANON9", "CR.1.2.840.113564.9.png", "normal", "actmed", "rgba-png")],
    }
    seed = 100
    for split, entries in lists.items():
        for _, name, _, _, kind in entries:
            seed += 1
            write_image(root / split / name, seed, kind)
        (root / f"{split}.txt").write_text("".join(f"{p} {n} {label} {s}\n" for p, n, label, s, _ in entries))
    return root


#: volume id -> number of slices written
UNLABELED_VOLUMES = {"Data-1_coronacases_org_001": 3,
                     "Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_1-dcm": 2}


def write_unlabeled_ct(root: Path) -> Path:
    """``slices/<volume>_<index>.jpg``: 3 + 2 slices of two volumes (indices 1, 2, 10 / 1, 2)."""
    seed = 200
    for volume, n in UNLABELED_VOLUMES.items():
        for index in (1, 2, 10)[:n]:
            seed += 1
            write_image(root / "slices" / f"{volume}_{index}.jpg", seed, "l-jpeg")
    return root


NATURAL_CLASSES = [("n01443537", "goldfish, Carassius auratus"), ("n01641577", "bullfrog, Rana catesbeiana"),
                   ("n01698640", "American alligator, Alligator mississipiensis")]


def write_natural(root: Path, classes_tsv: bool = True) -> Path:
    """ImageFolder: 3 classes x 2 train / x 1 val JPEGs (one greyscale), optional classes.tsv."""
    seed = 300
    for wnid, _ in NATURAL_CLASSES:
        for split, names in (("train", [f"{wnid}_0.JPEG", f"{wnid}_1.JPEG"]), ("val", [f"val_{seed}.JPEG"])):
            for name in names:
                seed += 1
                write_image(root / split / wnid / name, seed, "l-jpeg" if seed % 4 == 0 else "rgb-jpeg")
    if classes_tsv:
        # listed out of order on purpose: labels follow the index column
        lines = [f"{i}\t{wnid}\t{words}" for i, (wnid, words) in enumerate(NATURAL_CLASSES)]
        (root / "classes.tsv").write_text("\n".join(reversed(lines)) + "\n")
    return root


def write_medseg(root: Path) -> Path:
    """``images/<n>.jpg`` + ``masks/<n>.png``: 3 pairs, each mask a white square on black."""
    for n in range(3):
        write_image(root / "images" / f"{n}.jpg", 400 + n, "l-jpeg", size=32 + 8 * n)
        mask = Image.new("L", (32 + 8 * n, 32 + 8 * n), 0)
        mask.paste(255, (4, 4, 16, 16))
        (root / "masks").mkdir(parents=True, exist_ok=True)
        mask.save(root / "masks" / f"{n}.png")
    return root


def write_data_root(root: Path) -> Path:
    """All five sets under one data root, laid out like ../shared/data."""
    write_covid_ct(root / "covid-ct")
    write_covidx(root / "covidx-mini")
    write_unlabeled_ct(root / "lung-ct-unlabeled")
    write_medseg(root / "medseg-covid")
    write_natural(root / "natural" / "tiny-imagenet-100c")
    return root
