"""Fetching the public datasets with stable URLs, for users who are online.

covtl never downloads on its own: :func:`fetch` (``covtl fetch``) is the one place that does.
It downloads the published files of a dataset, checks them, and lays them out the way the
loaders expect (the dataset's published layout):

- ``covid19-ct``: COVID19-CT of UCSD-AI4H (the target task of both papers), from the
  UCSD-AI4H/COVID-CT GitHub repository: the two image archives, the split lists, the NonCOVID
  patient-id files and the two MetaInfo files, into ``<root>/covid-ct/``.
- ``tiny-imagenet-200``: Tiny ImageNet (CS231n, Stanford), rearranged into the ImageFolder
  layout of ``tiny-imagenet-100c`` (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``,
  ``classes.tsv``) with all 200 classes, into ``<root>/natural/tiny-imagenet-200/``.

How: each file is downloaded to ``<root>/.covtl-downloads/<dataset>/<path>.part`` and resumed
with an HTTP Range request when a ``.part`` is left from an interrupted run (a server that
ignores Range is read again from the start). A file with a published sha256 is checked
against it; none of these datasets publishes one, so the sha256 of what was downloaded is
recorded in ``<root>/.covtl-fetch.json`` (and logged) to verify the file later. The dataset
folder is assembled in a temporary sibling folder and renamed into place only when complete,
so a failed fetch leaves no half dataset. A dataset folder that is already complete is left
alone. When the network is unreachable, :class:`OfflineError` says which URL failed and how to
install the dataset by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import secrets
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from tqdm import tqdm

from .. import __version__
from ..io import write_json_atomic

__all__ = [
    "DOWNLOADS_DIR",
    "FETCH_RECORD",
    "REGISTRY",
    "ChecksumMismatchError",
    "DatasetSource",
    "FetchError",
    "OfflineError",
    "RemoteFile",
    "download",
    "fetch",
    "fetch_main",
    "manual_instructions",
]

log = logging.getLogger(__name__)

#: under the data root: the record of what was fetched, with the sha256 of every file
FETCH_RECORD = ".covtl-fetch.json"
#: under the data root: downloads in progress (``*.part``) and finished archives
DOWNLOADS_DIR = ".covtl-downloads"
_CHUNK = 1 << 20
_JUNK = ("__MACOSX/", ".DS_Store")  # macOS resource forks inside published zips


class FetchError(RuntimeError):
    """A dataset could not be fetched; the message says why and what to do."""


class OfflineError(FetchError, ConnectionError):
    """The server could not be reached (no network, DNS failure, refused, timed out)."""


class ChecksumMismatchError(FetchError):
    """A downloaded file does not have the expected sha256 (it was deleted)."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file of a dataset.

    Attributes:
        path: its path under the dataset's base URL (the URL is ``base_url/path``); the
            download is kept under the same relative path.
        unpack: how it enters the dataset folder: "copy" (as is), "unzip" (a zip archive,
            its single top folder stripped) or "tiny_imagenet" (the Tiny ImageNet zip,
            rearranged into ImageFolder layout).
        dest: where it goes, relative to the dataset folder ("" = the folder itself).
        sha256: the published checksum, or None when the publisher gives none.
    """

    path: str
    unpack: str
    dest: str
    sha256: str | None = None

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class DatasetSource:
    """Where a dataset is published and how its files make the layout covtl reads."""

    name: str
    folder: str  # the dataset folder, relative to the data root
    base_url: str
    files: tuple[RemoteFile, ...]
    expect: tuple[str, ...]  # paths (relative to the folder) that a complete copy has
    layout: str  # the folder layout, for the by-hand instructions
    about: str  # provenance and licence

    def url(self, file: RemoteFile, base_url: str | None = None) -> str:
        return f"{(base_url or self.base_url).rstrip('/')}/{file.path}"


def _covid_ct_files() -> tuple[RemoteFile, ...]:
    splits = ("train", "val", "test")
    return (
        RemoteFile("Images-processed/CT_COVID.zip", "unzip", "Images-processed/CT_COVID"),
        RemoteFile("Images-processed/CT_NonCOVID.zip", "unzip", "Images-processed/CT_NonCOVID"),
        *(RemoteFile(f"Data-split/COVID/{s}CT_COVID.txt", "copy", f"Data-split/COVID/{s}CT_COVID.txt")
          for s in splits),
        *(RemoteFile(f"Data-split/NonCOVID/{s}CT_NonCOVID.txt", "copy",
                     f"Data-split/NonCOVID/{s}CT_NonCOVID.txt") for s in splits),
        *(RemoteFile(f"Data-split/NonCOVID/CT_NonCOVID_{s}_id.csv", "copy",
                     f"Data-split/NonCOVID/CT_NonCOVID_{s}_id.csv") for s in splits),
        RemoteFile("COVID-CT-MetaInfo.xlsx", "copy", "COVID-CT-MetaInfo.xlsx"),
        RemoteFile("NonCOVID-CT-MetaInfo.xlsx", "copy", "NonCOVID-CT-MetaInfo.xlsx"),
    )


#: the datasets covtl can fetch. No publisher gives a checksum, so every sha256 is None: the
#: sha256 of the first download is recorded instead (never invent one here).
REGISTRY: dict[str, DatasetSource] = {
    "covid19-ct": DatasetSource(
        name="covid19-ct",
        folder="covid-ct",
        # github.com/<repo>/raw/<branch>/<path> also serves Git LFS files, unlike raw.githubusercontent
        base_url="https://github.com/UCSD-AI4H/COVID-CT/raw/master",
        files=_covid_ct_files(),
        expect=("Images-processed/CT_COVID", "Images-processed/CT_NonCOVID", "Data-split/COVID",
                "Data-split/NonCOVID"),
        layout="""\
{folder}/
  Images-processed/CT_COVID/*.png|*.jpg      CT_COVID.zip unpacked (its CT_COVID/ folder)
  Images-processed/CT_NonCOVID/*.png|*.jpg   CT_NonCOVID.zip unpacked (its CT_NonCOVID/ folder)
  Data-split/COVID/{{train,val,test}}CT_COVID.txt
  Data-split/NonCOVID/{{train,val,test}}CT_NonCOVID.txt
  Data-split/NonCOVID/CT_NonCOVID_{{train,val,test}}_id.csv
  COVID-CT-MetaInfo.xlsx
  NonCOVID-CT-MetaInfo.xlsx""",
        about="UCSD-AI4H/COVID-CT (Zhao et al. 2020, arXiv:2003.13865); research use only, "
              "copyrights belong to the authors and publishers of the source papers",
    ),
    "tiny-imagenet-200": DatasetSource(
        name="tiny-imagenet-200",
        folder="natural/tiny-imagenet-200",
        base_url="http://cs231n.stanford.edu",
        files=(RemoteFile("tiny-imagenet-200.zip", "tiny_imagenet", ""),),
        expect=("train", "val", "classes.tsv"),
        layout="""\
{folder}/
  train/<wnid>/*.JPEG    tiny-imagenet-200/train/<wnid>/images/*.JPEG
  val/<wnid>/*.JPEG      tiny-imagenet-200/val/images/*.JPEG, class from val/val_annotations.txt
  classes.tsv            "<index>\\t<wnid>\\t<words>" per class, wnids sorted (words from words.txt)""",
        about="Tiny ImageNet (Stanford CS231n), 200 classes of 64x64 ImageNet images; ImageNet "
              "terms: non-commercial research use only",
    ),
}


# -- downloading ------------------------------------------------------------------------


def _open(url: str, offset: int, timeout: float):
    """The HTTP response for ``url`` from byte ``offset`` (a Range request when > 0)."""
    headers = {"User-Agent": f"covtl/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(f"cannot reach {url}: {reason}") from err


def _range_start(response) -> int | None:
    """First byte of a 206 response ("Content-Range: bytes 100-999/1000" -> 100)."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0]) if value.startswith("bytes ") else None
    except (IndexError, ValueError):
        return None


def _hash_file(path: Path, digest=None):
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest


def _stream_to_part(url: str, part: Path, timeout: float) -> str:
    """Download ``url`` into ``part``, resuming it if it exists; the sha256 of the whole file."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:  # "range not satisfiable": the .part is stale; start over
            part.unlink()
            return _stream_to_part(url, part, timeout)
        raise FetchError(f"{url} answered HTTP {err.code} {err.reason} (moved or removed upstream?)") from err
    if response.status == 206 and _range_start(response) != offset:  # a range we did not ask for
        response.close()
        if not offset:
            raise FetchError(f"{url} sent a partial response (HTTP 206) to a plain request; try again later")
        part.unlink()
        return _stream_to_part(url, part, timeout)
    with response:
        resume = offset > 0 and response.status == 206
        if offset and not resume:
            log.info("%s ignored the Range request (HTTP %s); downloading it from the start", url,
                     response.status)
        start = offset if resume else 0
        digest = _hash_file(part) if resume else hashlib.sha256()
        length = response.headers.get("Content-Length")
        received = 0
        total = start + int(length) if length is not None else None
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, disable=None,
                   leave=False, desc=part.name.removesuffix(".part"))  # a bar on a terminal only
        with open(part, "ab" if resume else "wb") as out, bar:
            try:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                if length is not None and received < int(length):  # read(n) does not raise on a cut
                    raise http.client.IncompleteRead(b"", int(length) - received)
            except (OSError, http.client.HTTPException) as err:
                raise OfflineError(
                    f"download of {url} was interrupted after {start + received} bytes ({err!r}); "
                    f"run the fetch again to resume from {part}"
                ) from err
    return digest.hexdigest()


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, timeout: float = 60.0,
             sha256_prefix: str | None = None) -> str:
    """Download ``url`` to ``dest`` (resumable) and return its sha256.

    The bytes go to ``dest.part`` first; an existing ``.part`` is resumed with an HTTP Range
    request, and restarted when the server answers 200 instead of 206. Only a complete file
    whose sha256 matches ``sha256`` (or starts with ``sha256_prefix``, e.g. the hash in a
    torchvision weights file name), when given, is renamed to ``dest``. A resumed file that
    does not match is downloaded once more from the start before giving up.

    Raises:
        OfflineError: the server is unreachable or the transfer broke (the ``.part`` is kept,
            so a later call resumes it).
        FetchError: the server answered with an HTTP error.
        ChecksumMismatchError: the file does not match ``sha256``; nothing is kept.
    """
    if sha256_prefix is not None and len(sha256_prefix) < 8:
        raise ValueError(f"sha256_prefix {sha256_prefix!r} is too short to check anything (need 8+ hex digits)")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        resumed = part.is_file() and part.stat().st_size > 0
        got = _stream_to_part(url, part, timeout)
        if (sha256 is None or got == sha256) and (sha256_prefix is None or got.startswith(sha256_prefix)):
            os.replace(part, dest)
            return got
        part.unlink()
        if not resumed or attempt:
            break
        log.warning("resumed download of %s has the wrong sha256; downloading it again from the start", url)
    expected = sha256 if sha256 is not None and got != sha256 else f"it to start with {sha256_prefix}"
    raise ChecksumMismatchError(
        f"{url} downloaded with sha256 {got}, expected {expected}; the file was deleted. The download "
        "was corrupted or the publisher changed the file: try again, and if it persists check the "
        "file by hand."
    )


# -- unpacking --------------------------------------------------------------------------


def _members(archive: zipfile.ZipFile) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The archive's files (no folders, no macOS junk), refusing unsafe names ("..", "/x")."""
    members = []
    for info in archive.infolist():
        name = info.filename
        if info.is_dir() or any(j in name for j in _JUNK):
            continue
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise FetchError(f"archive member {name!r} would be written outside the dataset folder; refused")
        members.append((info, rel))
    return members


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, _CHUNK)


def _strip_top(members: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> int:
    """1 when every member sits in one top folder (e.g. ``CT_COVID/``), else 0."""
    tops = {rel.parts[0] for _, rel in members}
    return 1 if len(tops) == 1 and all(len(rel.parts) > 1 for _, rel in members) else 0


def _unpack_copy(file: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(file, dest)


def _unpack_zip(file: Path, dest: Path) -> None:
    with zipfile.ZipFile(file) as archive:
        members = _members(archive)
        strip = _strip_top(members)
        for info, rel in members:
            _copy_member(archive, info, dest.joinpath(*rel.parts[strip:]))


def _unpack_tiny_imagenet(file: Path, dest: Path) -> None:
    """Tiny ImageNet's zip -> ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``, ``classes.tsv``."""
    with zipfile.ZipFile(file) as archive:
        members = _members(archive)
        strip = _strip_top(members)
        by_name = {"/".join(rel.parts[strip:]): info for info, rel in members}
        try:
            wnids = sorted(archive.read(by_name["wnids.txt"]).decode().split())
            annotations = archive.read(by_name["val/val_annotations.txt"]).decode().splitlines()
        except KeyError as err:
            raise FetchError(f"{file.name} lacks {err}: not the Tiny ImageNet archive") from None
        words_info = by_name.get("words.txt")
        words = dict(line.split("\t", 1) for line in archive.read(words_info).decode().splitlines()
                     if "\t" in line) if words_info else {}
        val_class = dict(line.split("\t")[:2] for line in annotations if line.strip())
        for rel, info in by_name.items():
            parts = rel.split("/")
            if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
                _copy_member(archive, info, dest / "train" / parts[1] / parts[3])
            elif len(parts) == 3 and parts[:2] == ["val", "images"] and parts[2] in val_class:
                _copy_member(archive, info, dest / "val" / val_class[parts[2]] / parts[2])
    rows = [f"{i}\t{wnid}\t{words.get(wnid, '').strip()}\n" for i, wnid in enumerate(wnids)]
    (dest / "classes.tsv").write_text("".join(rows))


_UNPACKERS: dict[str, Callable[[Path, Path], None]] = {
    "copy": _unpack_copy,
    "unzip": _unpack_zip,
    "tiny_imagenet": _unpack_tiny_imagenet,
}


# -- the fetch record -------------------------------------------------------------------


def _read_record(root: Path) -> dict:
    try:
        record = json.loads((root / FETCH_RECORD).read_text())
    except (OSError, ValueError):
        return {"format": 1, "datasets": {}}
    record.setdefault("datasets", {})
    return record


def _record_file(root: Path, source: DatasetSource, file: RemoteFile, url: str, sha: str, size: int) -> None:
    record = _read_record(root)
    entry = record["datasets"].setdefault(source.name, {"folder": source.folder, "files": {}})
    entry["files"][file.path] = {
        "url": url, "sha256": sha, "bytes": size,
        "checksum": "published" if file.sha256 else "none published; sha256 recorded at download",
    }
    write_json_atomic(root / FETCH_RECORD, record)


def _record_complete(root: Path, source: DatasetSource) -> None:
    record = _read_record(root)
    record["datasets"].setdefault(source.name, {"folder": source.folder, "files": {}})["complete"] = True
    write_json_atomic(root / FETCH_RECORD, record)


def _recorded_sha(root: Path, source: DatasetSource, file: RemoteFile) -> str | None:
    entry = _read_record(root)["datasets"].get(source.name, {})
    return entry.get("files", {}).get(file.path, {}).get("sha256")


# -- fetching ---------------------------------------------------------------------------


def _source(name: str, registry: Mapping[str, DatasetSource] | None) -> DatasetSource:
    registry = REGISTRY if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown dataset {name!r}; covtl can fetch: {', '.join(registry)}")
    return registry[name]


def manual_instructions(
    name: str,
    root: str | os.PathLike,
    *,
    registry: Mapping[str, DatasetSource] | None = None,
    base_url: str | None = None,
) -> str:
    """How to install dataset ``name`` by hand under ``root``: what to download, where to put it."""
    source = _source(name, registry)
    target = Path(root) / source.folder
    urls = "\n".join(f"  {source.url(f, base_url)}" for f in source.files)
    return (
        f"To install {name} by hand, download\n{urls}\nand arrange them as\n"
        + source.layout.format(folder=target) + f"\n({source.about}.)"
    )


def _missing(source: DatasetSource, folder: Path) -> list[str]:
    return [p for p in source.expect if not (folder / p).exists()]


def _download_file(
    source: DatasetSource, file: RemoteFile, root: Path, downloads: Path, base_url: str | None, timeout: float
) -> Path:
    """The verified download of ``file`` under ``downloads`` (skipped when present and verified)."""
    url = source.url(file, base_url)
    dest = downloads / file.path
    expected = file.sha256 or _recorded_sha(root, source, file)
    if dest.is_file():
        if expected and _hash_file(dest).hexdigest() == expected:
            log.info("%s: %s already downloaded and verified", source.name, file.path)
            return dest
        dest.unlink()  # unverifiable or damaged: download again
    log.info("%s: downloading %s", source.name, url)
    sha = download(url, dest, sha256=file.sha256, timeout=timeout)
    if file.sha256 is None:
        log.info("%s: %s has sha256 %s (no published checksum)", source.name, file.path, sha)
    _record_file(root, source, file, url, sha, dest.stat().st_size)
    return dest


def _assemble(source: DatasetSource, archives: dict[RemoteFile, Path], target: Path) -> None:
    """Unpack every file into a temporary sibling of ``target``, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
    staging.mkdir()
    try:
        for file, archive in archives.items():
            try:
                _UNPACKERS[file.unpack](archive, staging / file.dest)
            except zipfile.BadZipFile as err:
                archive.unlink(missing_ok=True)  # so the next run downloads it again
                raise FetchError(
                    f"{file.path} is not a valid zip archive ({err}); the server sent something else "
                    "(an HTML page, a Git LFS pointer?). It was deleted."
                ) from err
        missing = _missing(source, staging)
        if missing:
            raise FetchError(f"after unpacking, {source.name} lacks {missing}: the published files "
                             "changed layout")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def fetch(
    name: str,
    root: str | os.PathLike,
    *,
    registry: Mapping[str, DatasetSource] | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    keep_downloads: bool = False,
) -> Path:
    """Download dataset ``name`` into ``root/<its folder>`` and return that folder.

    Args:
        name: a key of ``registry`` (default :data:`REGISTRY`: "covid19-ct", "tiny-imagenet-200").
        root: the data root (the folder that holds ``covid-ct/``, ``natural/``, ...).
        base_url: a mirror holding the same relative paths (default: the publisher's URL).
        timeout: seconds without an answer before a connection counts as offline.
        keep_downloads: keep the downloaded archives under ``root/.covtl-downloads``.

    A folder that is already complete is returned without any network access.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid ones).
        OfflineError: a URL cannot be reached; the message says which, and how to install
            the dataset by hand. Partial downloads are kept and resumed by the next call.
        ChecksumMismatchError, FetchError: a bad file or an HTTP error; nothing is left in
            the dataset folder.
    """
    source = _source(name, registry)
    root = Path(root)
    target = root / source.folder
    if target.exists():
        missing = _missing(source, target)
        if not missing:
            log.info("%s: %s is already complete", name, target)
            return target
        raise FetchError(
            f"{target} exists but lacks {missing}; covtl does not write into a folder it did not "
            f"make. Move it aside and fetch again, or complete it by hand.\n"
            + manual_instructions(name, root, registry=registry, base_url=base_url)
        )
    downloads = root / DOWNLOADS_DIR / source.name
    try:
        archives = {f: _download_file(source, f, root, downloads, base_url, timeout) for f in source.files}
    except FetchError as err:
        help_text = manual_instructions(name, root, registry=registry, base_url=base_url)
        raise type(err)(f"{err}\n{help_text}") from err
    unpublished = [f.path for f in source.files if f.sha256 is None]
    if unpublished:
        log.warning("%s: %d of its files have no published checksum; the sha256 of what was downloaded "
                    "is recorded in %s (it verifies these files later, not the first download)",
                    name, len(unpublished), root / FETCH_RECORD)
    _assemble(source, archives, target)
    _record_complete(root, source)
    if not keep_downloads:
        shutil.rmtree(downloads, ignore_errors=True)
        _remove_if_empty(root / DOWNLOADS_DIR)
    log.info("%s: ready at %s", name, target)
    return target


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty (other datasets' downloads) or already gone


def fetch_main(
    names: Iterable[str],
    root: str | os.PathLike,
    *,
    base_url: str | None = None,
    keep_downloads: bool = False,
    out: TextIO | None = None,
) -> int:
    """What ``covtl fetch NAME... --root DIR`` runs: fetch each dataset, report, exit status.

    ``names`` may contain "all". Returns 0 when every dataset is in place, else 1 (each
    failure is printed with its by-hand instructions).
    """
    out = out or sys.stdout
    names = list(names)
    if "all" in names:
        names = list(REGISTRY)
    status = 0
    for name in names:
        try:
            path = fetch(name, root, base_url=base_url, keep_downloads=keep_downloads)
        except (FetchError, ValueError) as err:
            print(f"{name}: FAILED\n{err}", file=out)
            status = 1
        else:
            print(f"{name}: {path}", file=out)
    return status
