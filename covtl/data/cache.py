"""A decoded-image cache: every image decoded and resized once, then read from one array file.

COVID19-CT images are up to ~1,700 px PNG/JPEG files; decoding them dominates an epoch at
64-128 px. :meth:`DecodedCache.build` decodes each file once with
:func:`covtl.data.images.load_image`, resizes it with :func:`resize_image` (the same function
the transforms of :mod:`covtl.data.transforms` start with) and stores all of them in one
``N x H x W x C`` uint8 ``.npy`` file, opened read-only as a memory map, so ``cache[i]`` is
exactly ``resize_image(load_image(path), size, method)``.

The cache is keyed by content: sha256 over the format version, size, mode, resize method,
Pillow version and, for each image in order, its path relative to the images' common folder
and the sha256 of its bytes. A copied or moved dataset hits the same cache; a changed,
renamed or reordered file misses it. Building is atomic (a temp file renamed into place,
then a JSON sidecar that marks the cache complete), so a crash leaves no half cache, and a
lock file serialises processes that build the same key at once.

Default location: ``$COVTL_CACHE``, else ``~/.cache/covtl``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL
from PIL import Image
from tqdm import tqdm

from ..io import write_json_atomic
from .images import IMAGE_MODES, load_image

try:  # POSIX; elsewhere concurrent builders still cannot corrupt (atomic rename), only duplicate work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "CACHE_FORMAT_VERSION",
    "DEFAULT_RESIZE",
    "RESIZE_METHODS",
    "DecodedCache",
    "cache_key",
    "default_cache_dir",
    "resize_image",
]

log = logging.getLogger(__name__)

#: bump when the file layout or the decode/resize semantics change: old caches then miss
CACHE_FORMAT_VERSION = 1
#: "square": plain resize to size x size (aspect ratio not kept; B sec. IV-A resizes CT images
#: to 224x224 this way). "center_crop": the central square (side = the shorter side) resized
#: to size x size, i.e. shorter-side resize then centre crop, done as one resample.
RESIZE_METHODS = ("square", "center_crop")
DEFAULT_RESIZE = "square"
_CHANNELS = {"RGB": 3, "L": 1}
# a pool's start-up (~0.1 s) outweighs a second process for a few images; bench/data.py measures
# the rest (2 processes help only when a core is free: on a saturated 2-core machine they do not)
_MIN_IMAGES_FOR_POOL = 64


def resize_image(image: Image.Image, size: int, method: str = DEFAULT_RESIZE) -> Image.Image:
    """Resize ``image`` to ``size x size`` pixels by ``method`` (one of :data:`RESIZE_METHODS`).

    Bilinear with Pillow's antialiasing (torchvision's default for PIL input). An image that
    already has ``size x size`` pixels is returned unchanged, so resizing a cached image again
    is a no-op.
    """
    if method not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {method!r}; choose one of {RESIZE_METHODS}")
    if image.size == (size, size):
        return image
    if method == "square":
        return image.resize((size, size), Image.Resampling.BILINEAR)
    w, h = image.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=box)


def default_cache_dir() -> Path:
    """``$COVTL_CACHE`` if set, else ``~/.cache/covtl``."""
    env = os.environ.get("COVTL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "covtl"


def _file_sha256(path: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"image file {path} does not exist; the cache needs every listed image (check the data "
            "root and the split lists)"
        )
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _relative_paths(paths: Sequence[str]) -> list[str]:
    """Each path relative to the folder that holds them all, with "/" separators."""
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return [Path(os.path.relpath(p, root)).as_posix() for p in absolute]


def cache_key(paths: Sequence[str], size: int, mode: str = "RGB", resize: str = DEFAULT_RESIZE) -> str:
    """The content key of a cache of ``paths`` (see the module docstring for what it covers)."""
    header = {
        "format": CACHE_FORMAT_VERSION, "size": size, "mode": mode, "resize": resize,
        "pillow": PIL.__version__, "n": len(paths),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for rel, path in zip(_relative_paths(paths), paths, strict=True):
        digest.update(f"{rel}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _decode_resized(job: tuple[str, int, str, str]) -> np.ndarray:
    """Decode one file and resize it: ``size x size x C`` uint8 (a process-pool task)."""
    path, size, mode, resize = job
    array = np.asarray(resize_image(load_image(path, mode), size, resize), dtype=np.uint8)
    return array.reshape(size, size, _CHANNELS[mode])


@contextmanager
def _build_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (blocks while another process builds)."""
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_args(paths: Sequence[str], size: int, mode: str, resize: str) -> None:
    if not paths:
        raise ValueError("DecodedCache.build needs at least one image path, got none")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"cache size must be a positive int (pixels per side), got {size!r}")
    if mode not in IMAGE_MODES:
        raise ValueError(f"cache mode must be one of {IMAGE_MODES}, got {mode!r}")
    if resize not in RESIZE_METHODS:
        raise ValueError(f"unknown resize method {resize!r}; choose one of {RESIZE_METHODS}")


class DecodedCache:
    """Images ``paths`` decoded, resized to ``size x size`` and held in one read-only memmap.

    Attributes:
        paths: the image paths, in the order given to :meth:`build` (``cache[i]`` is
            ``paths[i]``); a dataset checks ``cache.paths == its own list`` before use.
        size, mode, resize: what each image was turned into.
        key: the content key (sha256 hex) naming the files on disk.
        array: the ``N x size x size x C`` uint8 memmap (C = 3 for RGB, 1 for L).
    """

    def __init__(self, paths: Sequence[str], size: int, mode: str, resize: str, key: str, file: Path) -> None:
        self.paths = [str(p) for p in paths]
        self.size, self.mode, self.resize, self.key, self.file = size, mode, resize, key, Path(file)
        self.array = self._open_array()

    # -- building -----------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        paths: Sequence[str | os.PathLike],
        size: int,
        cache_dir: str | os.PathLike | None = None,
        mode: str = "RGB",
        resize: str = DEFAULT_RESIZE,
        workers: int | None = None,
    ) -> DecodedCache:
        """Open the cache of ``paths`` at ``size``, decoding and writing it first if absent.

        Args:
            paths: image files, decoded by content (:func:`covtl.data.images.load_image`).
            size: side of the stored square images, in pixels (see
                :func:`covtl.data.transforms.cache_spec` for the size a stage needs).
            cache_dir: where the ``.npy`` and ``.json`` files live (default
                :func:`default_cache_dir`).
            mode: "RGB" or "L".
            resize: one of :data:`RESIZE_METHODS` (default "square").
            workers: decoding processes; default 2 (or the CPU count, if smaller) for 64 or
                more images, else 1.

        Raises:
            ValueError: bad arguments. FileNotFoundError / ImageDecodeError: an image is
            missing or corrupt (nothing is written).
        """
        paths = [str(p) for p in paths]
        _check_args(paths, size, mode, resize)
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(paths, size, mode, resize)
        stem = cache_dir / f"decoded-v{CACHE_FORMAT_VERSION}-{key}"
        cache = cls._existing(paths, size, mode, resize, key, stem)
        if cache is not None:
            return cache
        with _build_lock(stem.with_suffix(".lock")):
            cache = cls._existing(paths, size, mode, resize, key, stem)  # built while we waited?
            if cache is not None:
                return cache
            for stale in cache_dir.glob(f"{stem.name}.*.npy.tmp"):  # left by a killed builder
                stale.unlink(missing_ok=True)
            start = time.perf_counter()
            cls._write_array(paths, size, mode, resize, stem.with_suffix(".npy"), workers)
            write_json_atomic(stem.with_suffix(".json"), {
                "format": CACHE_FORMAT_VERSION, "key": key, "size": size, "mode": mode,
                "resize": resize, "pillow": PIL.__version__, "n": len(paths),
                "root": os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]),
                "paths": _relative_paths(paths), "build_seconds": round(time.perf_counter() - start, 3),
            })
            log.info("decoded %d images to %s in %.1f s", len(paths), stem.with_suffix(".npy"),
                     time.perf_counter() - start)
        return cls(paths, size, mode, resize, key, stem.with_suffix(".npy"))

    @classmethod
    def _existing(
        cls, paths: list[str], size: int, mode: str, resize: str, key: str, stem: Path
    ) -> DecodedCache | None:
        """The complete cache at ``stem``, or None (absent, unfinished or damaged)."""
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
        except (OSError, ValueError):
            return None
        expected = {"format": CACHE_FORMAT_VERSION, "key": key, "n": len(paths)}
        if any(meta.get(field) != value for field, value in expected.items()):
            return None
        try:
            return cls(paths, size, mode, resize, key, stem.with_suffix(".npy"))
        except (OSError, ValueError) as err:
            log.warning("decoded cache %s is damaged (%s); rebuilding it", stem, err)
            return None

    @staticmethod
    def _write_array(
        paths: list[str], size: int, mode: str, resize: str, dest: Path, workers: int | None
    ) -> None:
        """Decode every image into a temp ``.npy`` next to ``dest``, then rename it into place."""
        if workers is None:
            workers = min(2, os.cpu_count() or 1) if len(paths) >= _MIN_IMAGES_FOR_POOL else 1
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if "fork" not in multiprocessing.get_all_start_methods():  # Windows: spawn re-imports torch
            workers = 1
        shape = (len(paths), size, size, _CHANNELS[mode])
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.stem + ".", suffix=".npy.tmp")
        os.close(fd)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            jobs = [(p, size, mode, resize) for p in paths]
            # the first build of a large cache takes minutes: a bar on a terminal (none in logs)
            bar = tqdm(total=len(jobs), unit="img", desc=f"decoding into the {size} px cache", disable=None,
                       leave=False)
            with bar:
                if workers == 1:
                    for i, job in enumerate(jobs):
                        out[i] = _decode_resized(job)
                        bar.update()
                else:
                    with multiprocessing.get_context("fork").Pool(workers) as pool:
                        for i, array in enumerate(pool.imap(_decode_resized, jobs, chunksize=8)):
                            out[i] = array
                            bar.update()
            out.flush()
            del out
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------

    def _open_array(self) -> np.ndarray:
        array = np.load(self.file, mmap_mode="r")
        expected = (len(self.paths), self.size, self.size, _CHANNELS[self.mode])
        if array.dtype != np.uint8 or array.shape != expected:
            raise ValueError(
                f"{self.file} holds {array.dtype} {array.shape}, expected uint8 {expected}; delete it "
                "and build the cache again"
            )
        return array

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        """Image ``index`` as a PIL image of ``mode``, ``size x size`` pixels."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"cache index {index} out of range for {len(self)} images")
        pixels = np.array(self.array[index])  # copy out of the read-only memmap
        return Image.fromarray(pixels[..., 0] if self.mode == "L" else pixels)  # uint8: L or RGB

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["array"]  # reopened in the receiving process (DataLoader workers with spawn)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.array = self._open_array()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {self.size}px {self.mode}, "
                f"resize={self.resize!r}, key={self.key[:12]})")
