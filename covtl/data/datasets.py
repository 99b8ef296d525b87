"""Torch datasets for the five real data layouts, read exactly as each set is published.

Every dataset is an :class:`ImageDataset`: a table of ``records`` (one row per image: absolute
``path``, integer ``label`` or -1 when unlabeled, patient / volume ``group``, ``split``) and a
``__getitem__`` that decodes the file by content (:func:`covtl.data.images.load_image`, RGB) or
takes it from a decoded-image cache (:meth:`ImageDataset.use_cache`).

Registry name -> class: layout under the dataset's own folder (splits)

- ``covid-ct`` -> :class:`CovidCT`: UCSD-AI4H COVID19-CT, official layout (train/val/test)
- ``covidx`` -> :class:`COVIDx`: ``train.txt``/``test.txt`` + ``train/``, ``test/`` (train/test)
- ``lung-ct-unlabeled`` -> :class:`UnlabeledCT`: ``slices/<volume>_<index>.jpg`` (train)
- ``natural`` -> :class:`NaturalImages`: ImageFolder ``train/<wnid>/``, ``val/<wnid>/`` (train/val)
- ``medseg`` -> :class:`SegmentedCT`: ``images/<n>.jpg`` + ``masks/<n>.png`` (all)

Groups are what patient-level statistics cluster on: COVID19-CT patient ids from the MetaInfo
files, COVIDx patient ids, CT volume ids, medseg slice numbers and natural-image file names.

Spreadsheets are read by content, not by extension: ``COVID-CT-MetaInfo.xlsx`` is a real xlsx
workbook (read with pandas and openpyxl) while ``NonCOVID-CT-MetaInfo.xlsx`` is CSV text (read
with :mod:`csv`); :func:`read_table` handles both.
"""

from __future__ import annotations

import csv
import io
import operator
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from .images import load_image

__all__ = [
    "COVIDx",
    "CovidCT",
    "DATASETS",
    "FOLDERS",
    "ImageCache",
    "ImageDataset",
    "NaturalImages",
    "RECORD_COLUMNS",
    "SegmentedCT",
    "UNLABELED",
    "UnlabeledCT",
    "load_dataset",
    "locate",
    "read_metainfo",
    "read_split_list",
    "read_table",
]

#: columns every dataset's ``records`` has (subclasses may add more, e.g. ``source``, ``mask_path``)
RECORD_COLUMNS = ("path", "label", "group", "split")
#: label of an unlabeled image
UNLABELED = -1

Transform = Callable[[Image.Image], Any]


class ImageCache(Protocol):
    """What :meth:`ImageDataset.use_cache` needs from a decoded-image cache."""

    paths: Sequence[str]  #: the image paths it holds, in dataset order

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Image.Image: ...

_ZIP_MAGIC = b"PK\x03\x04"
_IMAGE_SUFFIX = re.compile(r"\.(png|jpe?g|bmp|tiff?|gif)$", re.IGNORECASE)
_PATIENT_HEADER = re.compile(r"patient[\s_-]*ids?")
_FILE_HEADER = re.compile(r"(image|file)[\s_-]*(names?)?")


# --------------------------------------------------------------------------------------------
# tables: split lists, CSV text and xlsx workbooks
# --------------------------------------------------------------------------------------------

def read_split_list(path: str | os.PathLike) -> list[str]:
    """File names listed one per line in ``path`` (surrounding whitespace and blank lines dropped).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: a name is listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"split file {path} not found; restore it from the dataset's published Data-split "
            "folder (the split lists define which image belongs to which split)"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    names = [name for name in names if name]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"split file {path} lists {len(duplicates)} names twice, e.g. {duplicates[:3]}; "
                         "remove the repeated lines")
    return names


def read_table(path: str | os.PathLike) -> list[list[str]]:
    """Rows of a spreadsheet stored either as an xlsx workbook or as CSV text, whatever its name.

    The format is decided by the first bytes (``PK\\x03\\x04`` = zip = xlsx), never by the
    extension. Cells are returned as strings ("" for empty); rows with no content are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} not found")
    with path.open("rb") as f:
        magic = f.read(len(_ZIP_MAGIC))
    rows = _read_xlsx_rows(path) if magic == _ZIP_MAGIC else _read_csv_rows(path)
    return [row for row in rows if any(cell.strip() for cell in row)]


def _read_csv_rows(path: Path) -> list[list[str]]:
    """CSV text as rows of strings; UTF-8 (with or without BOM), else Latin-1 (never fails)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return [list(row) for row in csv.reader(io.StringIO(text))]


def _read_xlsx_rows(path: Path) -> list[list[str]]:
    """The first worksheet of an xlsx workbook as rows of strings (pandas with openpyxl).

    Numbers come back as text (``7`` -> "7"), empty cells as "", and each row ends at its last
    non-empty cell. The bytes are handed over as a buffer, so the file's name (``.csv``, say)
    does not matter.
    """
    try:
        with warnings.catch_warnings():  # minimal workbooks (e.g. the synthetic data's) have no styles
            warnings.filterwarnings("ignore", message="Workbook contains no default style", category=UserWarning)
            table = pd.read_excel(io.BytesIO(path.read_bytes()), sheet_name=0, header=None, dtype=str,
                                  na_filter=False, engine="openpyxl")
    except ImportError as err:
        raise ImportError(f"reading {path} needs openpyxl: pip install openpyxl") from err
    except Exception as err:  # zipfile.BadZipFile, KeyError, openpyxl's and pandas' own errors
        raise ValueError(f"{path} looks like an xlsx workbook but cannot be read ({type(err).__name__}: {err}); "
                         "re-save it from a spreadsheet program as .xlsx or as CSV") from err
    rows = []
    for values in table.itertuples(index=False):
        row = ["" if value is None else str(value) for value in values]
        while row and not row[-1]:
            row.pop()
        rows.append(row)
    return rows


def read_metainfo(path: str | os.PathLike) -> pd.DataFrame:
    """A COVID19-CT MetaInfo table as ``file`` -> ``patient`` (both stripped strings).

    Survives the published quirks: ``COVID-CT-MetaInfo.xlsx`` is a workbook with no header row
    (columns: file name, patient id, DOI, caption) whose file names sometimes lack the extension,
    plus caption-continuation rows with no file name; ``NonCOVID-CT-MetaInfo.xlsx`` is CSV text
    with a header (``,image name,patient id``). A header is recognised by a cell reading
    "patient id"; without one the first two columns are file name and patient id.

    Returns:
        DataFrame with columns ``file`` and ``patient`` ("" when the patient id is empty).
    """
    rows = read_table(path)
    if not rows:
        raise ValueError(f"MetaInfo table {path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    patient_columns = [i for i, cell in enumerate(header) if _PATIENT_HEADER.fullmatch(cell)]
    if patient_columns:
        file_columns = [i for i, cell in enumerate(header) if _FILE_HEADER.fullmatch(cell)]
        if not file_columns:
            raise ValueError(f"MetaInfo table {path} has a header {rows[0]} but no 'image name' column")
        file_column, patient_column = file_columns[0], patient_columns[0]
        rows = rows[1:]
    else:
        file_column, patient_column = 0, 1
    pairs = [(_cell(row, file_column), _cell(row, patient_column)) for row in rows]
    table = pd.DataFrame(pairs, columns=["file", "patient"])
    return table[table.file != ""].reset_index(drop=True)


def _cell(row: Sequence[str], column: int) -> str:
    return row[column].strip() if column < len(row) else ""


def _name_key(name: str) -> str:
    """File name without an image extension, to match MetaInfo names that omit it."""
    return _IMAGE_SUFFIX.sub("", name.strip())


def _patient_lookup(meta: pd.DataFrame) -> dict[str, str]:
    """MetaInfo ``file`` -> ``patient`` keyed by :func:`_name_key`; the first non-empty id wins."""
    lookup: dict[str, str] = {}
    for file, patient in zip(meta.file, meta.patient, strict=True):
        if patient:
            lookup.setdefault(_name_key(file), patient)
    return lookup


def _natural_key(text: str) -> tuple:
    """Sort key that orders "slice_2" before "slice_10"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))


def _list_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files of ``folder`` in natural order (any extension: decoded by content)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _require_dir(folder: Path, what: str, layout: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} not found; expected this layout:\n{layout}")


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------

class ImageDataset(Dataset):
    """A labelled (or unlabeled) image set backed by a table of records.

    Attributes:
        records: one row per image: ``path`` (absolute str), ``label`` (int, index into
            ``classes``; -1 when unlabeled), ``group`` (patient / volume id, str), ``split``.
            Treat it as read-only: ``__getitem__`` uses a copy taken at construction.
        classes: class names, index = label (empty for unlabeled sets).
        name: the registry name of the dataset.
        root: the dataset's own folder (absolute).
        split: the split that was loaded.
        transform: optional callable applied to the PIL image (RGB).

    Subclasses set ``name``, ``SPLITS`` and ``LAYOUT`` and implement :meth:`_scan`.
    """

    name: ClassVar[str] = ""
    #: the splits the layout has; the first is the default when there is only one
    SPLITS: ClassVar[tuple[str, ...]] = ()
    #: the published folder layout, shown in errors
    LAYOUT: ClassVar[str] = ""

    def __init__(self, root: str | os.PathLike, split: str | None = None, transform: Transform | None = None):
        if split is None:
            if len(self.SPLITS) != 1:
                raise ValueError(f"{self.name}: give a split, one of {self.SPLITS}")
            split = self.SPLITS[0]
        if split not in self.SPLITS:
            raise ValueError(f"{self.name} has no split {split!r}; "
                             f"available splits: {', '.join(self.SPLITS)}")
        self.root = Path(root).expanduser().resolve()
        _require_dir(self.root, f"{self.name} dataset folder", self.LAYOUT)
        self.split = split
        self.transform = transform
        records, classes = self._scan(split)
        self.classes: tuple[str, ...] = tuple(classes)
        self.records = self._validate(records.reset_index(drop=True))
        self._paths: list[str] = list(self.records.path)
        self._labels: list[int] = [int(label) for label in self.records.label]
        self._groups: list[str] = list(self.records.group)
        self._cache: ImageCache | None = None

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        """Read the layout: (records with at least :data:`RECORD_COLUMNS`, class names)."""
        raise NotImplementedError

    def _validate(self, records: pd.DataFrame) -> pd.DataFrame:
        """Check the records are non-empty, well-formed and that every listed file exists."""
        where = f"{self.name} split {self.split!r} under {self.root}"
        if records.empty:
            raise ValueError(f"{where} has no images; check the split lists / folders against the layout:\n"
                             f"{self.LAYOUT}")
        missing_columns = [c for c in RECORD_COLUMNS if c not in records.columns]
        if missing_columns:
            raise RuntimeError(f"{type(self).__name__}._scan returned no {missing_columns} columns")
        labels = records.label.astype(int)
        bad = (labels < UNLABELED) | (labels >= max(len(self.classes), 1))
        if bad.any() or (not self.classes and (labels != UNLABELED).any()):
            raise RuntimeError(f"{type(self).__name__}._scan returned labels outside the class range")
        missing = [path for path in records.path if not os.path.isfile(path)]
        if missing:
            names = ", ".join(os.path.relpath(p, self.root) for p in missing[:3])
            raise FileNotFoundError(
                f"{len(missing)} of {len(records)} images listed for {where} are missing (e.g. {names}); "
                "restore them from the published dataset or remove them from the split lists"
            )
        return records.assign(label=labels)

    # ---- access ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """``{"image": transform(pil) or pil, "label": int, "group": str, "path": str}``."""
        index = self._index(index)
        image = self._image(index)
        return {
            "image": self.transform(image) if self.transform is not None else image,
            "label": self._labels[index],
            "group": self._groups[index],
            "path": self._paths[index],
        }

    def _index(self, index: int) -> int:
        index = operator.index(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} {self.split!r} with {n} images")
        return index % n

    def _image(self, index: int) -> Image.Image:
        """The RGB PIL image at ``index``: from the cache when one is set, else decoded from file."""
        if self._cache is None:
            return load_image(self._paths[index], "RGB")
        image = self._cache[index]
        return image if image.mode == "RGB" else image.convert("RGB")

    @property
    def paths(self) -> list[str]:
        """Absolute image paths, in index order."""
        return list(self._paths)

    def use_cache(self, cache: ImageCache | None) -> None:
        """Take images from ``cache[i]`` instead of decoding files; ``None`` turns the cache off.

        ``cache`` needs ``__getitem__(i) -> PIL.Image`` and ``paths`` equal to this dataset's
        ``paths`` (same images in the same order), which is checked here.
        """
        if cache is None:
            self._cache = None
            return
        cache_paths = getattr(cache, "paths", None)
        if cache_paths is None:
            raise TypeError(f"{type(cache).__name__} has no `paths` attribute; a cache must list the image "
                            "paths it holds so they can be checked against the dataset")
        cache_paths = [str(p) for p in cache_paths]
        if cache_paths != self._paths:
            raise ValueError(_cache_mismatch(cache_paths, self._paths, f"{self.name} {self.split!r}"))
        self._cache = cache

    def __repr__(self) -> str:
        counts = self.records.label.value_counts().sort_index()
        per_class = ", ".join(f"{self.classes[k] if k >= 0 else 'unlabeled'}: {n}" for k, n in counts.items())
        if len(counts) > 5:
            per_class = f"{len(self.classes)} classes"
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"n={len(self)}; {per_class})")


def _cache_mismatch(cache_paths: list[str], paths: list[str], what: str) -> str:
    """Why a cache does not fit a dataset: the sizes and the first differing path."""
    first = next((i for i, (a, b) in enumerate(zip(cache_paths, paths, strict=False)) if a != b),
                 min(len(cache_paths), len(paths)))
    if first < min(len(cache_paths), len(paths)):
        detail = f"first difference at index {first}: cache {cache_paths[first]!r}, dataset {paths[first]!r}"
    else:
        detail = "one list is a prefix of the other"
    return (f"the cache does not match {what}: it holds {len(cache_paths)} images, the dataset {len(paths)}; "
            f"{detail}. Build the cache from this dataset's paths (same root, split and order)")


# --------------------------------------------------------------------------------------------
# the five layouts
# --------------------------------------------------------------------------------------------

class CovidCT(ImageDataset):
    """COVID19-CT (UCSD-AI4H) in its official layout; COVID = 1 is the positive class.

    Groups are patient ids from ``COVID-CT-MetaInfo.xlsx`` / ``NonCOVID-CT-MetaInfo.xlsx``
    (matched on the file name without extension, since some MetaInfo names omit it). An image
    with no patient id, or every image of a class whose MetaInfo file is absent, falls back to
    the group ``"<class>/<file stem>"`` (one image = one patient); ``n_fallback_groups`` counts
    them and a warning is issued. File names are used verbatim (``%`` is not URL-decoding).
    """

    name = "covid-ct"
    SPLITS = ("train", "val", "test")
    CLASSES = ("NonCOVID", "COVID")
    METAINFO = {"COVID": "COVID-CT-MetaInfo.xlsx", "NonCOVID": "NonCOVID-CT-MetaInfo.xlsx"}
    LAYOUT = """\
  Images-processed/CT_COVID/*.png|*.jpg        COVID images
  Images-processed/CT_NonCOVID/*.png|*.jpg     NonCOVID images
  Data-split/COVID/{train,val,test}CT_COVID.txt
  Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt
  COVID-CT-MetaInfo.xlsx, NonCOVID-CT-MetaInfo.xlsx   file name -> patient id"""

    n_fallback_groups: int

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        frames = []
        self.n_fallback_groups = unlisted = 0
        for label, cls in enumerate(self.CLASSES):
            folder = self.root / "Images-processed" / f"CT_{cls}"
            _require_dir(folder, "image folder", self.LAYOUT)
            names = read_split_list(self.split_file(self.root, cls, split))
            patients = self._patients(cls)
            groups = [patients.get(_name_key(name), "") if patients is not None else "" for name in names]
            fallback = [not group for group in groups]
            self.n_fallback_groups += sum(fallback)
            unlisted += sum(fallback) if patients is not None else 0
            frames.append(pd.DataFrame({
                "path": [str(folder / name) for name in names],
                "label": label,
                "group": [self.fallback_group(cls, name) if missing else group
                          for name, group, missing in zip(names, groups, fallback, strict=True)],
                "split": split,
            }))
        if unlisted:
            warnings.warn(f"{self.name} {split!r}: {unlisted} images have no patient id in the MetaInfo "
                          "files; each is treated as its own patient", stacklevel=3)
        return pd.concat(frames, ignore_index=True), self.CLASSES

    @staticmethod
    def fallback_group(cls: str, name: str) -> str:
        """Group of an image with no patient id: ``"<class>/<file stem>"`` (its own patient)."""
        return f"{cls}/{Path(name).stem}"

    @staticmethod
    def split_file(root: Path, cls: str, split: str) -> Path:
        """``Data-split/<cls>/<split>CT_<cls>.txt``."""
        return Path(root) / "Data-split" / cls / f"{split}CT_{cls}.txt"

    def _patients(self, cls: str) -> dict[str, str] | None:
        """File-name key -> patient id for one class; None (with a warning) when MetaInfo is absent."""
        path = self.root / self.METAINFO[cls]
        if not path.is_file():
            warnings.warn(f"{path} not found; {cls} images get one group per image, so patient-level "
                          "statistics will treat every image as a separate patient", stacklevel=4)
            return None
        return _patient_lookup(read_metainfo(path))


class COVIDx(ImageDataset):
    """Chest X-rays in the COVIDx format (``covidx-mini`` here); group = patient id.

    List lines are ``<patient_id> <file name> <label> [<source>]``; the file name is everything
    between the patient id and the label, so names with spaces survive. ``records`` has an
    extra ``source`` column ("" for 3-field lines).
    """

    name = "covidx"
    SPLITS = ("train", "test")
    CLASSES = ("normal", "pneumonia", "COVID-19")
    LAYOUT = """\
  train.txt, test.txt   one line per image: "<patient_id> <file name> <label> <source>"
  train/, test/         the images (labels: normal | pneumonia | COVID-19)"""

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        folder = self.root / split
        _require_dir(folder, "image folder", self.LAYOUT)
        rows = [self._parse_line(line, number, split)
                for number, line in enumerate(self._read_list(split), start=1) if line.strip()]
        records = pd.DataFrame(rows, columns=["group", "name", "label", "source"])
        records["path"] = [str(folder / name) for name in records.name]
        records["split"] = split
        return records[["path", "label", "group", "split", "source"]], self.CLASSES

    def _read_list(self, split: str) -> list[str]:
        path = self.root / f"{split}.txt"
        if not path.is_file():
            raise FileNotFoundError(f"split file {path} not found; the COVIDx layout is:\n{self.LAYOUT}")
        return path.read_text(encoding="utf-8-sig").splitlines()

    def _parse_line(self, line: str, number: int, split: str) -> tuple[str, str, int, str]:
        """One list line -> (patient id, file name, label index, source)."""
        fields = line.split()
        labels = {name.lower(): i for i, name in enumerate(self.CLASSES)}
        if len(fields) >= 4 and fields[-2].lower() in labels:
            patient, name, label, source = fields[0], " ".join(fields[1:-2]), fields[-2], fields[-1]
        elif len(fields) >= 3 and fields[-1].lower() in labels:
            patient, name, label, source = fields[0], " ".join(fields[1:-1]), fields[-1], ""
        else:
            raise ValueError(
                f"{self.root / f'{split}.txt'} line {number}: {line.strip()!r} is not "
                f"'<patient_id> <file name> <label> <source>' with a label in {self.CLASSES}"
            )
        return patient, name, labels[label.lower()], source


class UnlabeledCT(ImageDataset):
    """Unlabeled CT slices ``slices/<volume>_<index>.jpg``; group = volume id, label = -1."""

    name = "lung-ct-unlabeled"
    SPLITS = ("train",)
    LAYOUT = "  slices/<volume>_<index>.jpg   axial CT slices; <volume> groups slices by patient"

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        folder = self.root / "slices"
        _require_dir(folder, "slice folder", self.LAYOUT)
        files = _list_files(folder)
        unnamed = [p.name for p in files if "_" not in p.stem]
        if unnamed:
            raise ValueError(f"{len(unnamed)} files in {folder} are not named <volume>_<index> "
                             f"(e.g. {unnamed[:3]}); rename them or move them out")
        records = pd.DataFrame({
            "path": [str(p) for p in files],
            "label": UNLABELED,
            "group": [p.stem.rpartition("_")[0] for p in files],
            "split": split,
        })
        return records, ()


class NaturalImages(ImageDataset):
    """Natural photos in the ImageFolder layout (``train/<wnid>/*``, ``val/<wnid>/*``).

    With ``classes.tsv`` (tab-separated ``index, wnid, words``, no header) labels follow its
    index and ``classes`` are its words; without it labels follow the sorted wnids and
    ``classes`` are the wnids. ``wnids`` always holds the folder names. Group = file name.
    """

    name = "natural"
    SPLITS = ("train", "val")
    LAYOUT = """\
  train/<wnid>/*.JPEG, val/<wnid>/*.JPEG   one folder per class
  classes.tsv (optional)                    index <tab> wnid <tab> words"""

    wnids: tuple[str, ...]

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        folder = self.root / split
        _require_dir(folder, "split folder", self.LAYOUT)
        folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.wnids, words = self._class_table([p.name for p in folders])
        index = {wnid: i for i, wnid in enumerate(self.wnids)}
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise ValueError(f"class folders {unknown[:5]} in {folder} are not listed in "
                             f"{self.root / 'classes.tsv'}; add them to classes.tsv or remove the folders")
        rows = [(str(path), index[sub.name], path.name) for sub in folders for path in _list_files(sub)]
        records = pd.DataFrame(rows, columns=["path", "label", "group"]).assign(split=split)
        return records, words

    def _class_table(self, folder_names: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(wnids, class names) in label order, from ``classes.tsv`` or else the sorted folders."""
        path = self.root / "classes.tsv"
        if not path.is_file():
            return tuple(folder_names), tuple(folder_names)
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        rows = [line.split("\t") for line in lines if line.strip()]
        if any(len(row) < 2 for row in rows):
            raise ValueError(f"{path} must have tab-separated 'index, wnid, words' lines")
        try:
            rows.sort(key=lambda row: int(row[0]))
        except ValueError as err:
            raise ValueError(f"{path}: the first column must be the integer class index ({err})") from err
        if [int(row[0]) for row in rows] != list(range(len(rows))):
            raise ValueError(f"{path}: class indices must be 0..{len(rows) - 1} without gaps")
        wnids = tuple(row[1].strip() for row in rows)
        words = tuple(row[2].strip() if len(row) > 2 and row[2].strip() else row[1].strip() for row in rows)
        return wnids, words


class SegmentedCT(ImageDataset):
    """CT slices with infection masks: ``images/<n>.jpg`` + ``masks/<n>.png`` (white = infection).

    Items also carry ``mask``, loaded as "L". ``transform`` is applied to the image only, so use
    a deterministic one (resize, normalise): random crops or flips would misalign the mask. The
    mask is resized (nearest neighbour) to the transformed image's size: if the transformed
    image is a tensor ``(C, H, W)`` the mask is a float tensor ``(1, H, W)`` of 0/1 (pixel >
    127); otherwise it stays a PIL "L" image of the output size. Group = the slice name; label -1.
    """

    name = "medseg"
    SPLITS = ("all",)
    LAYOUT = """\
  images/<n>.jpg   CT slices
  masks/<n>.png    infection masks of the same size (white = infection)"""

    def _scan(self, split: str) -> tuple[pd.DataFrame, Sequence[str]]:
        images_dir, masks_dir = self.root / "images", self.root / "masks"
        _require_dir(images_dir, "image folder", self.LAYOUT)
        _require_dir(masks_dir, "mask folder", self.LAYOUT)
        masks = {p.stem: p for p in _list_files(masks_dir)}
        images = _list_files(images_dir)
        unpaired = [p.name for p in images if p.stem not in masks]
        if unpaired:
            raise FileNotFoundError(f"{len(unpaired)} of {len(images)} images in {images_dir} have no mask "
                                    f"in {masks_dir} (e.g. {unpaired[:3]}); a mask must share its image's "
                                    "stem")
        records = pd.DataFrame({
            "path": [str(p) for p in images],
            "label": UNLABELED,
            "group": [p.stem for p in images],
            "split": split,
            "mask_path": [str(masks[p.stem]) for p in images],
        })
        return records, ()

    def __init__(self, root: str | os.PathLike, split: str | None = None, transform: Transform | None = None):
        super().__init__(root, split, transform)
        self._mask_paths: list[str] = list(self.records.mask_path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The base item plus ``mask`` (see the class docstring for its type and size)."""
        index = self._index(index)
        item = super().__getitem__(index)
        mask = load_image(self._mask_paths[index], "L")
        item["mask"] = _fit_mask(mask, item["image"])
        return item


def _fit_mask(mask: Image.Image, image: Any) -> Any:
    """Resize ``mask`` (nearest) to ``image``'s size; a tensor image gets a (1, H, W) 0/1 float mask."""
    if isinstance(image, torch.Tensor):
        height, width = image.shape[-2:]
        resized = mask.resize((int(width), int(height)), Image.Resampling.NEAREST)
        return torch.from_numpy(np.asarray(resized) > 127).float().unsqueeze(0)  # 1xHxW
    size = getattr(image, "size", mask.size)
    return mask if mask.size == size else mask.resize(size, Image.Resampling.NEAREST)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

DATASETS: dict[str, type[ImageDataset]] = {
    "covid-ct": CovidCT,
    "covidx": COVIDx,
    "lung-ct-unlabeled": UnlabeledCT,
    "natural": NaturalImages,
    "medseg": SegmentedCT,
}

#: folder of each dataset under a data root laid out like ../shared/data (natural/ holds one set)
FOLDERS = {
    "covid-ct": "covid-ct",
    "covidx": "covidx-mini",
    "lung-ct-unlabeled": "lung-ct-unlabeled",
    "natural": "natural",
    "medseg": "medseg-covid",
}


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_dataset(name: str, root: str | os.PathLike, split: str | None = None,
                 transform: Transform | None = None) -> ImageDataset:
    """The dataset registered as ``name``, read from its own folder ``root`` (see :func:`locate`)."""
    _check_name(name)
    return DATASETS[name](root, split, transform=transform)


def locate(data_root: str | os.PathLike, name: str) -> Path:
    """The folder of dataset ``name`` under a data root laid out like ``../shared/data``.

    ``covid-ct/``, ``covidx-mini/``, ``lung-ct-unlabeled/``, ``medseg-covid/`` and
    ``natural/<one dataset folder>/``.
    """
    _check_name(name)
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise FileNotFoundError(f"data root {data_root} not found; give the folder that holds "
                                f"{', '.join(f + '/' for f in FOLDERS.values())}")
    folder = data_root / FOLDERS[name]
    if not folder.is_dir():
        raise FileNotFoundError(f"{name} data not found: expected the folder {folder} under the data root")
    if name == "natural":
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(subfolders) != 1:
            raise ValueError(f"{folder} must hold exactly one natural-image dataset folder, found "
                             f"{[p.name for p in subfolders]}; move the others out")
        folder = subfolders[0]
    return folder
