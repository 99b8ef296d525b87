"""Split audit of COVID19-CT: patient disjointness and near-duplicate images across splits.

The study does not trust the published split (STUDY.md, rule 4). Two checks:

- **patients**: no patient may appear in two of train / val / test. COVID patients come from
  ``COVID-CT-MetaInfo.xlsx``; NonCOVID patients both from ``NonCOVID-CT-MetaInfo.xlsx`` (the
  patients of the listed images) and from the per-split id files ``CT_NonCOVID_<split>_id.csv``.
- **near-duplicates**: the same picture (re-cropped, rescaled, recompressed) in two splits
  leaks test information even when the patient ids differ. Images are compared by the 64-bit
  DCT perceptual hash of the ``imagehash`` package (:func:`imagehash.phash`, Zauner 2010:
  32x32 greyscale -> 2-D DCT-II -> the 8x8 lowest frequencies -> one bit per coefficient above
  their median); a pair is a near-duplicate when the Hamming distance of the hashes (what
  ``imagehash`` gives as ``hash_a - hash_b``) is at most ``threshold``.

Glossary: N images; H = 64 hash bits; d(i, j) = Hamming distance in 0..64.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image

from .datasets import CovidCT, read_table
from .images import load_image

__all__ = [
    "DEFAULT_THRESHOLD",
    "SplitAudit",
    "audit_covid_ct",
    "hamming_distances",
    "hash_images",
    "id_file_agreement",
    "near_duplicates",
    "patient_overlap",
    "phash",
    "split_summary",
]

#: Hamming distance (of 64 bits; ``imagehash.phash(a) - imagehash.phash(b)``) at or below which
#: two images count as near-duplicates. Each hash has ~32 bits set (median split), so distances
#: are almost always even. On COVID19-CT the
#: same picture published twice lands at 2-4 (thumbnail correlation > 0.97), as do adjacent
#: slices of one patient; at 6 unrelated images of different patients start to appear across
#: splits (correlation < 0.75), and at 8 there are 161 pairs, mostly unrelated. Pairs are
#: candidates to look at, not proof.
DEFAULT_THRESHOLD = 4
#: side of the low-frequency DCT block kept (``imagehash.phash``'s ``hash_size``): 8 x 8 = 64 bits
HASH_BLOCK = 8
#: at most this many shared patient ids are listed per row of the overlap table
EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# perceptual hash
# --------------------------------------------------------------------------------------------

def phash(image: Image.Image) -> int:
    """64-bit DCT perceptual hash of a PIL image (any mode; converted to greyscale), as an int.

    :func:`imagehash.phash` (32x32 Lanczos thumbnail, 8x8 lowest DCT frequencies, one bit per
    coefficient above their median); bit ``8 * r + c`` (most significant first) is coefficient
    (r, c), so ``int(str(imagehash.phash(image)), 16)`` is the same number and the Hamming
    distance of two values equals ``imagehash``'s ``hash_a - hash_b``.
    """
    bits = imagehash.phash(image.convert("L"), hash_size=HASH_BLOCK).hash.ravel()  # 64 bools
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_images(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """pHash of each image file (decoded by content, RGBA composited on black): uint64 array (N,)."""
    return np.array([phash(load_image(path, "L")) for path in paths], dtype=np.uint64)


def hamming_distances(hashes: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances of 64-bit hashes: (N,) uint64 -> (N, N) int64."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)  # N x 64
    bits = bits.astype(np.int64)
    return bits @ (1 - bits).T + (1 - bits) @ bits.T  # N x N: bits set in one hash but not the other


def near_duplicates(paths: Sequence[str | os.PathLike], splits: Sequence[str],
                    threshold: int = DEFAULT_THRESHOLD, *, groups: Sequence[str] | None = None,
                    hashes: np.ndarray | None = None) -> pd.DataFrame:
    """Pairs of images whose pHashes differ in at most ``threshold`` of 64 bits.

    Args:
        paths: N image files.
        splits: the split of each image (N,).
        threshold: largest Hamming distance that counts as a near-duplicate, 0..64.
        groups: optional patient id of each image (N,), copied into the table.
        hashes: optional precomputed :func:`hash_images` of ``paths`` (N,), to skip decoding.

    Returns:
        One row per pair i < j, closest first: ``index_a``, ``index_b`` (positions in
        ``paths``), ``path_a``, ``path_b``, ``split_a``, ``split_b``, ``distance``, ``kind``
        ("within-split" or "across-splits") and, with ``groups``, ``group_a``, ``group_b``.
    """
    paths = [str(p) for p in paths]
    n = len(paths)
    if len(splits) != n or (groups is not None and len(groups) != n):
        raise ValueError(f"got {n} paths but {len(splits)} splits"
                         + ("" if groups is None else f" and {len(groups)} groups") + "; give one per image")
    if not 0 <= threshold <= HASH_BLOCK**2:
        raise ValueError(f"threshold must be a Hamming distance in 0..{HASH_BLOCK**2}, got {threshold}")
    hashes = hash_images(paths) if hashes is None else np.asarray(hashes, dtype=np.uint64)
    if hashes.shape != (n,):
        raise ValueError(f"hashes must have shape ({n},), got {hashes.shape}")
    distances = hamming_distances(hashes)  # N x N
    index_a, index_b = np.nonzero(np.triu(distances <= threshold, k=1))
    split_array = np.asarray(splits, dtype=object)
    table = pd.DataFrame({
        "index_a": index_a,
        "index_b": index_b,
        "path_a": [paths[i] for i in index_a],
        "path_b": [paths[j] for j in index_b],
        "split_a": split_array[index_a],
        "split_b": split_array[index_b],
        "distance": distances[index_a, index_b],
    })
    table["kind"] = np.where(table.split_a == table.split_b, "within-split", "across-splits")
    if groups is not None:
        group_array = np.asarray(groups, dtype=object)
        table["group_a"], table["group_b"] = group_array[index_a], group_array[index_b]
    return table.sort_values(["distance", "index_a", "index_b"], ignore_index=True)


# --------------------------------------------------------------------------------------------
# patients
# --------------------------------------------------------------------------------------------

def _covid_ct_records(root: Path) -> pd.DataFrame:
    """Records of all three COVID19-CT splits with a ``class`` column (groups from MetaInfo)."""
    frames = [CovidCT(root, split).records for split in CovidCT.SPLITS]
    records = pd.concat(frames, ignore_index=True)
    records["class"] = [CovidCT.CLASSES[label] for label in records.label]
    return records


def _id_file_patients(root: Path, split: str) -> set[str]:
    """Patient ids of ``Data-split/NonCOVID/CT_NonCOVID_<split>_id.csv`` (column "patient id")."""
    path = Path(root) / "Data-split" / "NonCOVID" / f"CT_NonCOVID_{split}_id.csv"
    if not path.is_file():
        raise FileNotFoundError(f"NonCOVID patient id file {path} not found; it is part of the official "
                                "Data-split folder of COVID19-CT")
    rows = read_table(path)
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if "patient id" not in header:
        raise ValueError(f"{path} has no 'patient id' column (header: {rows[0] if rows else 'none'})")
    column = header.index("patient id")
    return {row[column].strip() for row in rows[1:] if column < len(row) and row[column].strip()}


def _overlap_rows(cls: str, source: str, patients: dict[str, set[str]]) -> list[dict]:
    """One row per split pair: sizes, number of shared patients and up to EXAMPLES shared ids."""
    rows = []
    for split_a, split_b in itertools.combinations(CovidCT.SPLITS, 2):
        shared = sorted(patients[split_a] & patients[split_b])
        rows.append({
            "class": cls, "source": source, "split_a": split_a, "split_b": split_b,
            "patients_a": len(patients[split_a]), "patients_b": len(patients[split_b]),
            "shared": len(shared), "examples": ", ".join(shared[:EXAMPLES]),
        })
    return rows


def patient_overlap(dataset_root: str | os.PathLike, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Patient disjointness of COVID19-CT's train / val / test, per class and id source.

    Args:
        dataset_root: the COVID19-CT folder (official layout).
        records: optional records of all three splits with a ``class`` column (as built by
            :func:`audit_covid_ct`), to avoid re-reading the split lists.

    Returns:
        One row per (class, source, split pair): ``class``, ``source`` (the file the patient ids
        come from), ``split_a``, ``split_b``, ``patients_a``, ``patients_b``, ``shared`` (number
        of patients in both splits) and ``examples`` (up to five shared ids).
    """
    root = Path(dataset_root)
    records = _covid_ct_records(root) if records is None else records
    rows = []
    for cls in CovidCT.CLASSES:
        mine = records[records["class"] == cls]
        patients = {split: set(mine.group[mine.split == split]) for split in CovidCT.SPLITS}
        rows += _overlap_rows(cls, CovidCT.METAINFO[cls], patients)
    id_files = {split: _id_file_patients(root, split) for split in CovidCT.SPLITS}
    rows += _overlap_rows("NonCOVID", "CT_NonCOVID_<split>_id.csv", id_files)
    return pd.DataFrame(rows)


def id_file_agreement(dataset_root: str | os.PathLike, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """Do the NonCOVID id files list the same patients as the MetaInfo of each split's images?

    Returns:
        One row per split: ``split``, ``id_file`` and ``metainfo`` (patient counts),
        ``only_in_id_file`` and ``only_in_metainfo`` (counts) and ``examples``.
    """
    root = Path(dataset_root)
    records = _covid_ct_records(root) if records is None else records
    rows = []
    for split in CovidCT.SPLITS:
        listed = _id_file_patients(root, split)
        mine = records[(records["class"] == "NonCOVID") & (records.split == split)]
        found = set(mine.group)
        only_listed, only_found = sorted(listed - found), sorted(found - listed)
        rows.append({"split": split, "id_file": len(listed), "metainfo": len(found),
                     "only_in_id_file": len(only_listed), "only_in_metainfo": len(only_found),
                     "examples": ", ".join((only_listed + only_found)[:EXAMPLES])})
    return pd.DataFrame(rows)


def split_summary(records: pd.DataFrame) -> pd.DataFrame:
    """Images and patients per class and split (B's Table I), plus an ``all`` row per class.

    Args:
        records: records of all splits with ``class``, ``split``, ``group`` and ``path``.

    Returns:
        ``class``, ``split``, ``images``, ``patients``, ``fallback_groups`` (images whose
        patient id is unknown; each counts as its own patient).
    """
    rows = []
    for cls in CovidCT.CLASSES:
        mine = records[records["class"] == cls]
        for split in (*CovidCT.SPLITS, "all"):
            part = mine if split == "all" else mine[mine.split == split]
            fallback = part.group == [CovidCT.fallback_group(cls, Path(p).name) for p in part.path]
            rows.append({"class": cls, "split": split, "images": len(part),
                         "patients": part.group.nunique(), "fallback_groups": int(fallback.sum())})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# the whole audit
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitAudit:
    """Tables of the COVID19-CT split audit (see :func:`audit_covid_ct`)."""

    summary: pd.DataFrame  #: images and patients per class and split
    patient_overlap: pd.DataFrame  #: shared patients per class, id source and split pair
    id_file_agreement: pd.DataFrame  #: NonCOVID id files vs MetaInfo, per split
    near_duplicates: pd.DataFrame  #: image pairs within ``threshold``, with split, class, patient
    near_duplicate_counts: pd.DataFrame  #: number of such pairs per split pair and kind
    threshold: int  #: Hamming distance threshold used (of 64 bits)
    seconds: float  #: wall time of the audit

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables by name, for a notebook or a results file."""
        return {
            "summary": self.summary,
            "patient_overlap": self.patient_overlap,
            "id_file_agreement": self.id_file_agreement,
            "near_duplicates": self.near_duplicates,
            "near_duplicate_counts": self.near_duplicate_counts,
        }


def _pair_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """Number of near-duplicate pairs per (unordered) split pair, all split pairs listed."""
    order = {split: i for i, split in enumerate(CovidCT.SPLITS)}
    keys = [tuple(sorted((a, b), key=order.__getitem__)) for a, b in zip(pairs.split_a, pairs.split_b,
                                                                          strict=True)]
    rows = []
    for split_a, split_b in itertools.combinations_with_replacement(CovidCT.SPLITS, 2):
        rows.append({"split_a": split_a, "split_b": split_b,
                     "kind": "within-split" if split_a == split_b else "across-splits",
                     "pairs": keys.count((split_a, split_b))})
    return pd.DataFrame(rows)


def audit_covid_ct(root: str | os.PathLike, threshold: int = DEFAULT_THRESHOLD) -> SplitAudit:
    """Audit COVID19-CT's official split: patients shared by splits and near-duplicate images.

    Decodes every image once (a few seconds for the 746 real images on one core).
    """
    start = time.perf_counter()
    root = Path(root)
    records = _covid_ct_records(root)
    pairs = near_duplicates(records.path, records.split, threshold, groups=records.group)
    pairs.insert(pairs.columns.get_loc("split_b") + 1, "class_a", records["class"].to_numpy()[pairs.index_a])
    pairs.insert(pairs.columns.get_loc("class_a") + 1, "class_b", records["class"].to_numpy()[pairs.index_b])
    return SplitAudit(
        summary=split_summary(records),
        patient_overlap=patient_overlap(root, records),
        id_file_agreement=id_file_agreement(root, records),
        near_duplicates=pairs,
        near_duplicate_counts=_pair_counts(pairs),
        threshold=threshold,
        seconds=round(time.perf_counter() - start, 2),
    )
