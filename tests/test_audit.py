"""Split audit: the perceptual hash, pairwise distances, patient overlap, and the real split."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from data_layouts import picture, write_covid_ct, write_image
from PIL import Image, ImageDraw, ImageFilter

from covtl.data.audit import (
    DEFAULT_THRESHOLD,
    audit_covid_ct,
    hamming_distances,
    hash_images,
    id_file_agreement,
    near_duplicates,
    patient_overlap,
    phash,
)
from covtl.data.datasets import locate


def ct_like(seed: int, size: int = 128) -> Image.Image:
    """A bright body ellipse on black with a few random blobs, like an axial CT slice."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    draw.ellipse([0.1 * size, 0.2 * size, 0.9 * size, 0.85 * size], fill=200)
    for _ in range(6):
        (x, y), r = rng.uniform(0.2, 0.8, 2) * size, rng.uniform(0.05, 0.15) * size
        draw.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.uniform(0, 255)))
    return image.filter(ImageFilter.GaussianBlur(1))


def recompressed(image: Image.Image, size: int, quality: int = 60) -> Image.Image:
    """``image`` resized to ``size`` px and round-tripped through JPEG."""
    buffer = io.BytesIO()
    image.resize((size, size), Image.Resampling.BILINEAR).convert("RGB").save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def distance(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


# ---- hash ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_phash_identical_copy_and_different_image(seed):
    image = ct_like(seed)
    assert distance(phash(image), phash(image.copy())) == 0
    assert distance(phash(image), phash(image.convert("RGBA"))) == 0  # mode does not matter
    assert distance(phash(image), phash(recompressed(image, 90))) <= 2
    assert distance(phash(image), phash(recompressed(image, 200))) <= 2
    assert distance(phash(image), phash(ct_like(seed + 100))) >= 10


def test_phash_is_64_bits_with_half_set():
    value = phash(picture(1, 64))
    assert 0 <= value < 2**64 and bin(value).count("1") == 32


def test_phash_is_imagehash_phash_and_distance_is_its_hamming_distance():
    import imagehash

    a, b = ct_like(1), ct_like(2)
    assert phash(a) == int(str(imagehash.phash(a)), 16)
    assert distance(phash(a), phash(b)) == imagehash.phash(a) - imagehash.phash(b)


def test_hamming_distances_match_a_slow_reference():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=20, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 20).astype(
        np.uint64)
    hashes[3] = np.uint64(2**64 - 1)
    hashes[4] = np.uint64(0)
    fast = hamming_distances(hashes)
    slow = np.array([[distance(int(a), int(b)) for b in hashes] for a in hashes])
    np.testing.assert_array_equal(fast, slow)
    assert fast[3, 4] == 64 and fast.shape == (20, 20)


def test_near_duplicates_finds_a_planted_copy_across_splits(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", i, size=64) for i in range(4)]
    copy = tmp_path / "copy.png"  # JPEG bytes under .png, another size: still found
    Image.open(paths[1]).resize((90, 90)).convert("RGB").save(copy, format="JPEG", quality=70)
    paths.append(copy)
    splits = ["train", "train", "val", "test", "test"]
    pairs = near_duplicates(paths, splits, groups=list("abcde"))
    assert len(pairs) == 1
    row = pairs.iloc[0]
    assert (row.index_a, row.index_b, row.split_a, row.split_b) == (1, 4, "train", "test")
    assert row.kind == "across-splits" and row.distance <= DEFAULT_THRESHOLD
    assert (row.group_a, row.group_b) == ("b", "e") and row.path_b == str(copy)
    hashes = hash_images(paths)
    same = near_duplicates(paths, ["train"] * 5, hashes=hashes)
    assert same.kind.tolist() == ["within-split"]
    assert len(near_duplicates(paths, splits, threshold=64, hashes=hashes)) == 10


def test_near_duplicates_rejects_bad_arguments(tmp_path):
    paths = [write_image(tmp_path / "a.png", 1)]
    with pytest.raises(ValueError, match="1 paths but 2 splits"):
        near_duplicates(paths, ["train", "val"])
    with pytest.raises(ValueError, match="threshold must be a Hamming distance in 0..64, got 65"):
        near_duplicates(paths, ["train"], threshold=65)
    with pytest.raises(ValueError, match=r"hashes must have shape \(1,\)"):
        near_duplicates(paths, ["train"], hashes=np.zeros(2, dtype=np.uint64))


# ---- patients ------------------------------------------------------------------------------

def test_patient_overlap_clean_fixture(tmp_path):
    table = patient_overlap(write_covid_ct(tmp_path / "covid-ct"))
    assert len(table) == 9 and table.shared.sum() == 0
    assert set(table.source) == {"COVID-CT-MetaInfo.xlsx", "NonCOVID-CT-MetaInfo.xlsx",
                                 "CT_NonCOVID_<split>_id.csv"}


def test_patient_overlap_finds_the_planted_shared_patient(tmp_path):
    table = patient_overlap(write_covid_ct(tmp_path / "covid-ct", shared_patient=True))
    shared = table[table.shared > 0]
    columns = ["class", "source", "split_a", "split_b", "examples"]
    found = set(shared[columns].itertuples(index=False, name=None))
    assert found == {
        ("COVID", "COVID-CT-MetaInfo.xlsx", "train", "test", "Patient 1"),
        ("NonCOVID", "NonCOVID-CT-MetaInfo.xlsx", "train", "val", "crawled_patient_1"),
        ("NonCOVID", "CT_NonCOVID_<split>_id.csv", "train", "val", "crawled_patient_1"),
    }
    assert shared.shared.tolist() == [1, 1, 1]


def test_id_file_agreement_reports_disagreement(tmp_path):
    root = write_covid_ct(tmp_path / "covid-ct")
    assert id_file_agreement(root)[["only_in_id_file", "only_in_metainfo"]].to_numpy().sum() == 0
    id_file = root / "Data-split" / "NonCOVID" / "CT_NonCOVID_val_id.csv"
    id_file.write_text(",patient id\n0,medpix_patient_99\n")
    row = id_file_agreement(root).set_index("split").loc["val"]
    assert (row.only_in_id_file, row.only_in_metainfo) == (1, 1)
    assert row.examples == "medpix_patient_99, medpix_patient_12"


def test_audit_on_fixture(tmp_path):
    audit = audit_covid_ct(write_covid_ct(tmp_path / "covid-ct", duplicate_across_splits=True))
    summary = audit.summary.set_index(["class", "split"])
    assert summary.loc[("COVID", "all"), "images"] == 6 and summary.loc[("COVID", "all"), "patients"] == 5
    assert summary.loc[("NonCOVID", "train"), "patients"] == 2
    pairs = audit.near_duplicates
    assert len(pairs) == 1
    assert Path(pairs.path_a[0]).name == "0.jpg"
    assert Path(pairs.path_b[0]).name == "PIIS0140673620303603%1.png"
    assert (pairs.class_a[0], pairs.class_b[0], pairs.kind[0]) == ("NonCOVID", "COVID", "across-splits")
    counts = audit.near_duplicate_counts.set_index(["split_a", "split_b"]).pairs
    assert counts[("train", "test")] == 1 and counts.sum() == 1
    assert set(audit.tables()) == {"summary", "patient_overlap", "id_file_agreement", "near_duplicates",
                                   "near_duplicate_counts"}


# ---- the real split ------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_covid_ct_audit(shared_data):
    audit = audit_covid_ct(locate(shared_data, "covid-ct"))
    assert audit.threshold == 4
    # patients per split (B's Table I says 130/32/54 COVID and 105/24/42 NonCOVID patients)
    patients = audit.summary.set_index(["class", "split"]).patients.to_dict()
    assert patients == {
        ("NonCOVID", "train"): 105, ("NonCOVID", "val"): 24, ("NonCOVID", "test"): 42,
        ("NonCOVID", "all"): 171,
        ("COVID", "train"): 128, ("COVID", "val"): 32, ("COVID", "test"): 53, ("COVID", "all"): 213,
    }
    assert audit.summary.fallback_groups.sum() == 0
    # the official split is patient-disjoint by every id source
    assert audit.patient_overlap.shared.sum() == 0 and len(audit.patient_overlap) == 9
    assert audit.id_file_agreement[["only_in_id_file", "only_in_metainfo"]].to_numpy().sum() == 0
    # 23 near-duplicate pairs (imagehash.phash; the home-made pHash it replaced found one more
    # within-split pair, at 4 where imagehash says 6): 21 within a split (mostly adjacent slices
    # of one patient) and 2 across splits -- the same two figures of the Korean J Radiol paper, labelled NonCOVID in
    # train (crawled_patient_71) and COVID in test (Patients 195 and 196)
    pairs = audit.near_duplicates
    assert len(pairs) == 23
    assert pairs.kind.value_counts().to_dict() == {"within-split": 21, "across-splits": 2}
    across = pairs[pairs.kind == "across-splits"]
    found = {(Path(a).name, Path(b).name, d)
             for a, b, d in zip(across.path_a, across.path_b, across.distance, strict=True)}
    assert found == {("71%0.jpg", "kjr-21-e24-p5-29.png", 2), ("71%1.jpg", "kjr-21-e24-p5-31.png", 4)}
    assert set(across.class_a) == {"NonCOVID"} and set(across.class_b) == {"COVID"}
    counts = audit.near_duplicate_counts.set_index(["split_a", "split_b"]).pairs.to_dict()
    assert counts == {("train", "train"): 16, ("train", "val"): 0, ("train", "test"): 2,
                      ("val", "val"): 0, ("val", "test"): 0, ("test", "test"): 5}
