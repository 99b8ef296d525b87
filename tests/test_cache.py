"""The decoded-image cache: exactness, content keys, reuse without decoding, atomic builds."""

from __future__ import annotations

import pickle
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from covtl.data import cache as cache_module
from covtl.data.cache import DecodedCache, cache_key, default_cache_dir, resize_image
from covtl.data.images import ImageDecodeError, load_image
from covtl.data.transforms import build_transform, cache_spec


def _write(path: Path, array: np.ndarray, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


@pytest.fixture()
def dataset(tmp_path: Path) -> list[str]:
    """Six images with the real data's quirks: JPEG bytes in a .png, modes L/RGB/RGBA, odd sizes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data" / "Images-processed"
    files = [
        ("CT_COVID/a.png", rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), "PNG"),
        ("CT_COVID/jpeg-data.png", rng.integers(0, 256, (130, 100, 3), dtype=np.uint8), "JPEG"),
        ("CT_COVID/gray%1.png", rng.integers(0, 256, (70, 70), dtype=np.uint8), "PNG"),
        ("CT_NonCOVID/rgba.png", rng.integers(0, 256, (64, 200, 4), dtype=np.uint8), "PNG"),
        ("CT_NonCOVID/b.jpg", rng.integers(0, 256, (101, 99, 3), dtype=np.uint8), "JPEG"),
        ("CT_NonCOVID/small.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), "PNG"),
    ]
    for name, array, fmt in files:
        _write(root / name, array, fmt)
    return [str(root / name) for name, _, _ in files]


@pytest.fixture()
def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path the cache decodes (in this process; builds here use workers=1)."""
    seen: list[str] = []
    lock = threading.Lock()

    def counting_load_image(path, mode="RGB"):
        with lock:
            seen.append(str(path))
        return load_image(path, mode)

    monkeypatch.setattr(cache_module, "load_image", counting_load_image)
    return seen


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("resize", ["square", "center_crop"])
def test_cached_image_equals_uncached_resize(dataset, tmp_path, mode, resize) -> None:
    cache = DecodedCache.build(dataset, 32, tmp_path / "cache", mode=mode, resize=resize, workers=1)
    assert len(cache) == len(dataset) and cache.paths == dataset
    assert cache.array.shape == (len(dataset), 32, 32, 3 if mode == "RGB" else 1)
    assert not cache.array.flags.writeable
    for i, path in enumerate(dataset):
        got = cache[i]
        assert got.mode == mode and got.size == (32, 32)
        assert np.array_equal(np.asarray(got), np.asarray(resize_image(load_image(path, mode), 32, resize)))


def test_second_build_reuses_without_decoding(dataset, tmp_path, count_decodes) -> None:
    first = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    assert len(count_decodes) == len(dataset)
    count_decodes.clear()
    second = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    assert count_decodes == []
    assert second.key == first.key and second.file == first.file
    assert np.array_equal(np.asarray(second.array), np.asarray(first.array))


def test_copied_dataset_hits_the_same_cache(dataset, tmp_path, count_decodes) -> None:
    DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    count_decodes.clear()
    copy_root = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tmp_path / "data", copy_root)
    moved = [p.replace(str(tmp_path / "data"), str(copy_root)) for p in dataset]
    cache = DecodedCache.build(moved, 24, tmp_path / "cache", workers=1)
    assert count_decodes == []
    assert cache.paths == moved  # the caller's paths, not the ones it was built from


def test_key_follows_content_names_order_and_settings(dataset, tmp_path) -> None:
    key = cache_key(dataset, 24)
    assert cache_key(dataset, 24) == key
    assert cache_key(dataset, 32) != key
    assert cache_key(dataset, 24, mode="L") != key
    assert cache_key(dataset, 24, resize="center_crop") != key
    assert cache_key(dataset[::-1], 24) != key
    renamed = Path(dataset[0]).with_name("renamed.png")
    Path(dataset[0]).rename(renamed)
    assert cache_key([str(renamed), *dataset[1:]], 24) != key
    renamed.rename(dataset[0])
    assert cache_key(dataset, 24) == key
    _write(Path(dataset[0]), np.zeros((90, 120, 3), np.uint8), "PNG")  # same name, new content
    assert cache_key(dataset, 24) != key


def test_changed_file_is_decoded_again(dataset, tmp_path, count_decodes) -> None:
    DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    _write(Path(dataset[2]), np.zeros((70, 70), np.uint8), "PNG")
    count_decodes.clear()
    cache = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    assert len(count_decodes) == len(dataset)
    assert not np.asarray(cache[2]).any()


def test_failed_build_leaves_no_files(dataset, tmp_path, monkeypatch) -> None:
    calls = []

    def failing_load_image(path, mode="RGB"):
        calls.append(path)
        if len(calls) == 3:
            raise ImageDecodeError(f"cannot decode image {path}")
        return load_image(path, mode)

    monkeypatch.setattr(cache_module, "load_image", failing_load_image)
    with pytest.raises(ImageDecodeError, match="cannot decode"):
        DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert all(name.endswith(".lock") for name in left), left


def test_missing_file_raises_and_writes_nothing(dataset, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecodedCache.build([*dataset, str(tmp_path / "nope.png")], 24, tmp_path / "cache", workers=1)
    assert not list((tmp_path / "cache").glob("*.npy")) and not list((tmp_path / "cache").glob("*.json"))


def test_concurrent_builders_of_one_key_decode_once(dataset, tmp_path, count_decodes) -> None:
    results: list[DecodedCache] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 2
    assert len(count_decodes) == len(dataset)  # the second builder waited, then reused
    assert np.array_equal(np.asarray(results[0].array), np.asarray(results[1].array))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_damaged_cache_is_rebuilt(dataset, tmp_path, count_decodes) -> None:
    cache = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    expected = np.array(cache.array)
    cache.file.write_bytes(cache.file.read_bytes()[:200])  # truncated by a full disk, say
    count_decodes.clear()
    rebuilt = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    assert len(count_decodes) == len(dataset)
    assert np.array_equal(np.asarray(rebuilt.array), expected)


def test_process_pool_gives_the_same_array(dataset, tmp_path) -> None:
    one = DecodedCache.build(dataset, 24, tmp_path / "one", workers=1)
    two = DecodedCache.build(dataset, 24, tmp_path / "two", workers=2)
    assert np.array_equal(np.asarray(one.array), np.asarray(two.array))


@pytest.mark.parametrize("stage,train", [("a_stl_n", True), ("b_supervised", True), ("b_supervised", False),
                                         ("a_stl_m", True), ("eval", False)])
def test_transform_of_cached_image_equals_uncached(dataset, tmp_path, stage, train) -> None:
    size, method = cache_spec(stage, 32, train)
    cache = DecodedCache.build(dataset, size, tmp_path / "cache", resize=method, workers=1)
    transform = build_transform(stage, 32, train)
    for i, path in enumerate(dataset):
        torch.manual_seed(i)
        from_cache = transform(cache[i])
        torch.manual_seed(i)
        assert torch.equal(from_cache, transform(load_image(path)))


def test_pickles_for_dataloader_workers(dataset, tmp_path) -> None:
    cache = DecodedCache.build(dataset, 24, tmp_path / "cache", workers=1)
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.paths == cache.paths and clone.key == cache.key
    assert np.array_equal(np.asarray(clone[-1]), np.asarray(cache[len(cache) - 1]))
    with pytest.raises(IndexError):
        cache[len(cache)]


def test_default_cache_dir_honours_covtl_cache(dataset, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COVTL_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    cache = DecodedCache.build(dataset[:2], 16, workers=1)
    assert cache.file.parent == tmp_path / "env-cache"
    assert cache.file.with_suffix(".json").is_file()
    monkeypatch.delenv("COVTL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "covtl"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"paths": []}, "at least one image"),
        ({"size": 0}, "positive int"),
        ({"size": 32.0}, "positive int"),
        ({"mode": "CMYK"}, "mode must be one of"),
        ({"resize": "stretch"}, "unknown resize method 'stretch'"),
        ({"workers": 0}, "workers must be >= 1"),
    ],
)
def test_bad_arguments_raise(dataset, tmp_path, kwargs, message) -> None:
    args = {"paths": dataset, "size": 24, "cache_dir": tmp_path / "cache", **kwargs}
    with pytest.raises(ValueError, match=message):
        DecodedCache.build(**args)


@pytest.mark.realdata
def test_real_covid_ct_images_cache_exactly(shared_data, tmp_path) -> None:
    folders = sorted((shared_data / "covid-ct" / "Images-processed").glob("CT_*"))
    if not folders:
        pytest.skip("COVID19-CT images not found under the shared data")
    paths = [str(p) for folder in folders for p in sorted(folder.iterdir())[:6]]
    cache = DecodedCache.build(paths, 64, tmp_path / "cache", workers=1)
    for i, path in enumerate(paths):
        assert np.array_equal(np.asarray(cache[i]), np.asarray(resize_image(load_image(path), 64)))
