"""Datasets in the five real layouts: fixtures with the real quirks, every error case, real data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_layouts import (
    COVID_CT_FILES,
    LONG_NAME,
    NATURAL_CLASSES,
    UNLABELED_VOLUMES,
    write_covid_ct,
    write_covidx,
    write_data_root,
    write_image,
    write_medseg,
    write_natural,
    write_unlabeled_ct,
    write_xlsx,
)
from PIL import Image
from torch.utils.data import DataLoader

from covtl.data.datasets import (
    DATASETS,
    RECORD_COLUMNS,
    UNLABELED,
    CovidCT,
    COVIDx,
    ImageDataset,
    NaturalImages,
    SegmentedCT,
    UnlabeledCT,
    load_dataset,
    locate,
    read_metainfo,
    read_split_list,
    read_table,
)
from covtl.data.images import ImageDecodeError


def _to_tensor(image: Image.Image) -> torch.Tensor:
    """A deterministic test transform: 16x16 resize -> float tensor 3x16x16."""
    array = np.asarray(image.resize((16, 16)), dtype=np.float32) / 255.0  # 16x16x3
    return torch.from_numpy(array).permute(2, 0, 1)


@pytest.fixture
def covid_ct(tmp_path) -> Path:
    return write_covid_ct(tmp_path / "covid-ct")


# ---- spreadsheets --------------------------------------------------------------------------

@pytest.mark.parametrize("inline", [False, True])
def test_read_table_reads_xlsx_by_content_whatever_the_name(tmp_path, inline):
    path = write_xlsx(tmp_path / "table.csv", [["a", None, "c"], [7, "x&y <z>"]], inline=inline)
    assert read_table(path) == [["a", "", "c"], ["7", "x&y <z>"]]


def test_read_table_reads_a_workbook_saved_by_a_spreadsheet_program(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.title = "positive_captions"
    for row in (["1.png", "Patient 1", None, "caption"], [None, None, None, "continued"], [2.5, 7]):
        book.active.append(row)
    book.create_sheet("second").append(["not", "read"])
    path = tmp_path / "COVID-CT-MetaInfo.data"  # the name does not matter
    book.save(path)
    assert read_table(path) == [["1.png", "Patient 1", "", "caption"], ["", "", "", "continued"], ["2.5", "7"]]


def test_read_table_reads_csv_text_named_xlsx(tmp_path):
    path = tmp_path / "NonCOVID-CT-MetaInfo.xlsx"
    path.write_text(",image name,patient id\n0,1%0.jpg,crawled_patient_1\n\n")
    assert read_table(path) == [["", "image name", "patient id"], ["0", "1%0.jpg", "crawled_patient_1"]]


def test_read_table_names_a_broken_workbook(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="broken.xlsx"):
        read_table(path)


def test_read_metainfo_survives_the_published_quirks(covid_ct):
    covid = read_metainfo(covid_ct / "COVID-CT-MetaInfo.xlsx")
    assert list(covid.columns) == ["file", "patient"]
    assert "kjr-21-e24-p5-29" in set(covid.file)  # listed without extension
    assert "Patient 2" in set(covid.patient)  # trailing space stripped
    assert len(covid) == 6  # the caption-only row is dropped
    noncovid = read_metainfo(covid_ct / "NonCOVID-CT-MetaInfo.xlsx")
    assert noncovid.iloc[1].tolist() == ["1%0.jpg", "crawled_patient_1"]


def test_read_split_list_strips_crlf_and_rejects_repeats(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"a.png\r\n\r\nb.png")
    assert read_split_list(path) == ["a.png", "b.png"]
    path.write_text("a.png\nb.png\na.png\n")
    with pytest.raises(ValueError, match="twice.*a.png"):
        read_split_list(path)


# ---- COVID19-CT ----------------------------------------------------------------------------

@pytest.mark.parametrize("split", CovidCT.SPLITS)
def test_covid_ct_fixture_counts_labels_and_groups(covid_ct, split):
    ds = CovidCT(covid_ct, split)
    expected = [(name, patient, label) for label, cls in enumerate(CovidCT.CLASSES)
                for name, patient, _ in COVID_CT_FILES[cls][split]]
    assert len(ds) == len(expected)
    assert list(ds.records.columns[:4]) == list(RECORD_COLUMNS)
    assert [Path(p).name for p in ds.paths] == [name for name, _, _ in expected]
    assert list(ds.records.group) == [patient for _, patient, _ in expected]
    assert list(ds.records.label) == [label for _, _, label in expected]
    assert set(ds.records.split) == {split}
    assert all(Path(p).is_absolute() for p in ds.paths)
    assert ds.classes == ("NonCOVID", "COVID") and ds.n_fallback_groups == 0


def test_covid_ct_decodes_every_quirk_to_rgb(covid_ct):
    datasets = [CovidCT(covid_ct, split) for split in CovidCT.SPLITS]
    items = [ds[i] for ds in datasets for i in range(len(ds))]
    assert {item["image"].mode for item in items} == {"RGB"}
    names = {Path(item["path"]).name for item in items}
    assert LONG_NAME in names and len(LONG_NAME) > 150  # long name with "%" (L-mode PNG)
    assert "2020.01.24.919183-p27-133.png" in names  # JPEG bytes under .png
    assert "2020.01.24.919183-p27-132.png" in names  # RGBA


def test_covid_ct_item_and_transform(covid_ct):
    ds = CovidCT(covid_ct, "train", transform=_to_tensor)
    item = ds[-1]
    assert item["image"].shape == (3, 16, 16)
    assert item["label"] == 1 and item["group"] == "Patient 2" and item["path"] == ds.paths[-1]
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].tolist() == [0, 0, 0, 1]


def test_covid_ct_image_without_patient_id_falls_back_to_its_stem(tmp_path):
    root = write_covid_ct(tmp_path / "covid-ct", unlisted_image=True)
    with pytest.warns(UserWarning, match="1 images have no patient id"):
        ds = CovidCT(root, "test")
    assert ds.n_fallback_groups == 1
    assert ds.records.group.iloc[-1] == "COVID/2020.03.25.20043166-p17-79"


def test_covid_ct_without_metainfo_warns_and_groups_by_file(covid_ct):
    (covid_ct / "NonCOVID-CT-MetaInfo.xlsx").unlink()
    with pytest.warns(UserWarning, match="NonCOVID-CT-MetaInfo.xlsx not found"):
        ds = CovidCT(covid_ct, "train")
    assert ds.n_fallback_groups == 3
    assert list(ds.records.group[:3]) == ["NonCOVID/0", "NonCOVID/1%0", "NonCOVID/1%1"]


# ---- the other layouts ---------------------------------------------------------------------

def test_covidx_fixture(tmp_path):
    root = write_covidx(tmp_path / "covidx-mini")
    train, test = COVIDx(root, "train"), COVIDx(root, "test")
    assert (len(train), len(test)) == (4, 2)
    assert train.classes == ("normal", "pneumonia", "COVID-19")
    assert list(train.records.label) == [0, 2, 2, 1]
    assert list(train.records.group) == ["actmed-ANON1", "cohen-17", "cohen-17", "cohen-22"]
    assert list(test.records.source) == ["fig1", "actmed"]
    assert {test[i]["image"].mode for i in range(2)} == {"RGB"}


def test_covidx_reads_names_with_spaces_and_three_field_lines(tmp_path):
    root = write_covidx(tmp_path / "covidx-mini")
    write_image(root / "test" / "a b.png", 1)
    (root / "test.txt").write_text("p1 a b.png COVID-19 cohen\np2 a b.png pneumonia\n")
    ds = COVIDx(root, "test")
    assert [Path(p).name for p in ds.paths] == ["a b.png", "a b.png"]
    assert list(ds.records.label) == [2, 1] and list(ds.records.source) == ["cohen", ""]


def test_covidx_names_a_bad_line(tmp_path):
    root = write_covidx(tmp_path / "covidx-mini")
    (root / "test.txt").write_text("p1 x.png COVID-19 cohen\np2 y.png tuberculosis cohen\n")
    with pytest.raises(ValueError, match=r"test.txt line 2: 'p2 y.png tuberculosis cohen'"):
        COVIDx(root, "test")


def test_unlabeled_ct_groups_slices_by_volume(tmp_path):
    ds = UnlabeledCT(write_unlabeled_ct(tmp_path / "lung-ct-unlabeled"))
    assert ds.split == "train" and ds.classes == ()
    assert len(ds) == sum(UNLABELED_VOLUMES.values())
    assert set(ds.records.label) == {UNLABELED}
    assert ds.records.group.value_counts().to_dict() == UNLABELED_VOLUMES
    first = [Path(p).name for p in ds.paths[:3]]
    assert first == [f"Data-1_coronacases_org_001_{i}.jpg" for i in (1, 2, 10)]  # natural order


def test_unlabeled_ct_rejects_names_without_volume(tmp_path):
    root = write_unlabeled_ct(tmp_path / "lung-ct-unlabeled")
    write_image(root / "slices" / "scan.jpg", 1, "l-jpeg")
    with pytest.raises(ValueError, match=r"not named <volume>_<index>.*scan.jpg"):
        UnlabeledCT(root)


@pytest.mark.parametrize("classes_tsv", [True, False])
def test_natural_images(tmp_path, classes_tsv):
    root = write_natural(tmp_path / "tiny", classes_tsv=classes_tsv)
    train, val = NaturalImages(root, "train"), NaturalImages(root, "val")
    words = tuple(w for _, w in NATURAL_CLASSES) if classes_tsv else tuple(w for w, _ in NATURAL_CLASSES)
    assert train.classes == words and train.wnids == tuple(w for w, _ in NATURAL_CLASSES)
    assert (len(train), len(val)) == (6, 3)
    assert list(train.records.label) == [0, 0, 1, 1, 2, 2]
    assert list(train.records.group) == [Path(p).name for p in train.paths]
    assert {train[i]["image"].mode for i in range(6)} == {"RGB"}


def test_natural_images_reject_unlisted_class_folder(tmp_path):
    root = write_natural(tmp_path / "tiny")
    write_image(root / "train" / "n99999999" / "x.JPEG", 1, "rgb-jpeg")
    with pytest.raises(ValueError, match="n99999999.*classes.tsv"):
        NaturalImages(root, "train")


def test_segmented_ct_masks_follow_the_image(tmp_path):
    root = write_medseg(tmp_path / "medseg-covid")
    plain = SegmentedCT(root)
    item = plain[2]
    assert item["mask"].mode == "L" and item["mask"].size == item["image"].size == (48, 48)
    tensors = SegmentedCT(root, transform=_to_tensor)
    item = tensors[2]
    assert item["image"].shape == (3, 16, 16) and item["mask"].shape == (1, 16, 16)
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["mask"][0, 2, 2] == 1 and item["mask"][0, 12, 12] == 0  # white square at 4..16 of 48 px


def test_segmented_ct_names_images_without_mask(tmp_path):
    root = write_medseg(tmp_path / "medseg-covid")
    (root / "masks" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images .* no mask.*1.jpg"):
        SegmentedCT(root)


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DATASETS))
def test_missing_root_names_folder_and_layout(tmp_path, name):
    cls = DATASETS[name]
    with pytest.raises(FileNotFoundError, match=r"nowhere not found; expected this layout") as info:
        cls(tmp_path / "nowhere", cls.SPLITS[0])
    assert cls.LAYOUT in str(info.value)


def test_missing_split_file_is_named(covid_ct):
    (covid_ct / "Data-split" / "COVID" / "valCT_COVID.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"split file .*valCT_COVID.txt not found"):
        CovidCT(covid_ct, "val")
    write_covidx(covid_ct.parent / "covidx")
    (covid_ct.parent / "covidx" / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"split file .*test.txt not found"):
        COVIDx(covid_ct.parent / "covidx", "test")


def test_listed_but_absent_file_is_named_and_counted(covid_ct):
    (covid_ct / "Images-processed" / "CT_NonCOVID" / "1%1.jpg").unlink()
    message = (r"1 of 6 images listed for covid-ct split 'train' .* are missing "
               r"\(e\.g\. Images-processed/CT_NonCOVID/1%1\.jpg\)")
    with pytest.raises(FileNotFoundError, match=message):
        CovidCT(covid_ct, "train")


def test_corrupt_image_raises_on_access_naming_the_file(covid_ct):
    (covid_ct / "Images-processed" / "CT_COVID" / "kjr-21-e24-p5-29.png").write_bytes(b"\x89PNG truncated")
    ds = CovidCT(covid_ct, "val")  # construction does not decode
    ds[0]
    with pytest.raises(ImageDecodeError, match="kjr-21-e24-p5-29.png"):
        ds[1]


def test_empty_split_is_an_error(covid_ct):
    for cls in CovidCT.CLASSES:
        (covid_ct / "Data-split" / cls / f"val{'CT_' + cls}.txt").write_text("\n")
    with pytest.raises(ValueError, match="covid-ct split 'val' .* has no images"):
        CovidCT(covid_ct, "val")


def test_unknown_dataset_and_split(tmp_path, covid_ct):
    with pytest.raises(ValueError, match="unknown dataset 'luna'; choose one of covid-ct, covidx"):
        load_dataset("luna", covid_ct, "train")
    with pytest.raises(ValueError, match="unknown dataset"):
        locate(tmp_path, "luna")
    with pytest.raises(ValueError, match="covid-ct has no split 'all'; available splits: train, val, test"):
        CovidCT(covid_ct, "all")
    with pytest.raises(ValueError, match="covidx has no split 'val'; available splits: train, test"):
        COVIDx(write_covidx(tmp_path / "covidx"), "val")
    with pytest.raises(ValueError, match="give a split"):
        CovidCT(covid_ct)


def test_index_out_of_range(covid_ct):
    ds = CovidCT(covid_ct, "val")
    assert ds[-2]["path"] == ds[0]["path"]
    with pytest.raises(IndexError, match="index 2 out of range"):
        ds[2]


# ---- cache ---------------------------------------------------------------------------------

class FakeCache:
    """Stands in for the decoded-image cache: ``paths`` and ``__getitem__`` -> PIL."""

    def __init__(self, paths: list[str], colour: int = 7):
        self.paths = list(paths)
        self.colour = colour
        self.calls: list[int] = []

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        self.calls.append(i)
        return Image.new("L", (5, 5), self.colour)


def test_use_cache_serves_images_from_the_cache(covid_ct):
    ds = CovidCT(covid_ct, "train")
    cache = FakeCache(ds.paths)
    ds.use_cache(cache)
    item = ds[1]
    assert cache.calls == [1] and item["image"].mode == "RGB" and item["image"].size == (5, 5)
    assert item["path"] == ds.paths[1] and item["group"] == "crawled_patient_1"
    ds.use_cache(None)
    assert ds[1]["image"].size == (32, 32) and cache.calls == [1]


def test_use_cache_rejects_a_cache_of_other_images(covid_ct):
    ds = CovidCT(covid_ct, "train")
    message = r"does not match covid-ct 'train': it holds 5 images, the dataset 6; .*prefix"
    with pytest.raises(ValueError, match=message):
        ds.use_cache(FakeCache(ds.paths[:5]))
    with pytest.raises(ValueError, match=r"first difference at index 0"):
        ds.use_cache(FakeCache(ds.paths[::-1]))
    with pytest.raises(TypeError, match="no `paths` attribute"):
        ds.use_cache(object())


# ---- registry ------------------------------------------------------------------------------

def test_locate_and_load_every_dataset(tmp_path):
    root = write_data_root(tmp_path / "data")
    sizes = {"covid-ct": 6, "covidx": 4, "lung-ct-unlabeled": 5, "natural": 6, "medseg": 3}
    for name, cls in DATASETS.items():
        ds = load_dataset(name, locate(root, name), cls.SPLITS[0])
        assert isinstance(ds, cls) and isinstance(ds, ImageDataset)
        assert ds.name == name and len(ds) == sizes[name]
    assert locate(root, "natural") == root / "natural" / "tiny-imagenet-100c"


def test_locate_errors(tmp_path):
    root = write_data_root(tmp_path / "data")
    (root / "natural" / "other").mkdir()
    with pytest.raises(ValueError, match=r"exactly one .* found \['other', 'tiny-imagenet-100c'\]"):
        locate(root, "natural")
    with pytest.raises(FileNotFoundError, match="data root .*missing not found"):
        locate(tmp_path / "missing", "covid-ct")
    with pytest.raises(FileNotFoundError, match="covidx data not found.*covidx-mini"):
        locate(tmp_path, "covidx")


# ---- real data -----------------------------------------------------------------------------

@pytest.mark.realdata
def test_real_covid_ct_counts(shared_data):
    root = locate(shared_data, "covid-ct")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every real image has a patient id
        splits = {split: CovidCT(root, split) for split in CovidCT.SPLITS}
    counts = {split: ds.records.label.value_counts().to_dict() for split, ds in splits.items()}
    assert counts == {"train": {0: 234, 1: 191}, "val": {0: 58, 1: 60}, "test": {0: 105, 1: 98}}
    assert sum(ds.records.label.sum() for ds in splits.values()) == 349
    assert sum(len(ds) for ds in splits.values()) == 746
    assert all(ds.n_fallback_groups == 0 for ds in splits.values())


@pytest.mark.realdata
def test_real_covid_ct_every_image_decodes(shared_data):
    root = locate(shared_data, "covid-ct")
    for split in CovidCT.SPLITS:
        ds = CovidCT(root, split)
        for i in range(len(ds)):
            assert ds[i]["image"].mode == "RGB"


@pytest.mark.realdata
def test_real_covidx_mini(shared_data):
    root = locate(shared_data, "covidx")
    train, test = COVIDx(root, "train"), COVIDx(root, "test")
    assert (len(train), len(test)) == (491, 113)
    assert train.records.label.value_counts().to_dict() == {2: 394, 1: 69, 0: 28}
    assert test.records.label.value_counts().to_dict() == {2: 90, 1: 17, 0: 6}
    assert not set(train.records.group) & set(test.records.group)  # patient-level split


@pytest.mark.realdata
def test_real_unlabeled_ct(shared_data):
    ds = UnlabeledCT(locate(shared_data, "lung-ct-unlabeled"))
    assert len(ds) == 1600 and ds.records.group.nunique() == 20


@pytest.mark.realdata
def test_real_medseg(shared_data):
    ds = SegmentedCT(locate(shared_data, "medseg"))
    assert len(ds) == 50
    item = ds[0]
    assert item["mask"].size == item["image"].size


@pytest.mark.realdata
def test_real_natural(shared_data):
    root = locate(shared_data, "natural")
    assert root.name == "tiny-imagenet-100c"
    train, val = NaturalImages(root, "train"), NaturalImages(root, "val")
    assert len(train.classes) == 100 and train.classes[0] == "goldfish, Carassius auratus"
    assert set(train.records.label.value_counts()) == {200} and len(train) == 20_000
    assert set(val.records.label.value_counts()) == {50} and len(val) == 5_000
