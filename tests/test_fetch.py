"""Fetching datasets from a local HTTP server: layout, checksums, resume, offline errors."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from covtl.data.fetch import (
    DOWNLOADS_DIR,
    FETCH_RECORD,
    REGISTRY,
    ChecksumMismatchError,
    FetchError,
    OfflineError,
    download,
    fetch,
    fetch_main,
    manual_instructions,
)

COVID = REGISTRY["covid19-ct"]


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _covid_ct_files() -> dict[str, bytes]:
    """The published files of COVID19-CT in miniature, as the server holds them."""
    files = {
        "Images-processed/CT_COVID.zip": _zip({
            "CT_COVID/2020.02.10.20021584-p6-52%0.png": b"\x89PNG fake covid image 0" * 50,
            "CT_COVID/jpeg-inside.png": b"\xff\xd8\xff fake jpeg bytes" * 40,
            "__MACOSX/CT_COVID/._jpeg-inside.png": b"resource fork",
        }),
        "Images-processed/CT_NonCOVID.zip": _zip({"CT_NonCOVID/0.jpg": b"\xff\xd8\xff noncovid" * 30}),
        "COVID-CT-MetaInfo.xlsx": b"PK fake workbook",
        "NonCOVID-CT-MetaInfo.xlsx": b"File name,Patient ID\n0.jpg,1\n",
    }
    for split in ("train", "val", "test"):
        files[f"Data-split/COVID/{split}CT_COVID.txt"] = f"{split} covid list\n".encode()
        files[f"Data-split/NonCOVID/{split}CT_NonCOVID.txt"] = f"{split} noncovid list\n".encode()
        files[f"Data-split/NonCOVID/CT_NonCOVID_{split}_id.csv"] = f"image,id\n{split}.jpg,1\n".encode()
    return files


class _Handler(BaseHTTPRequestHandler):
    """GET with optional "Range: bytes=N-" support; every request is logged on the server."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        data = server.files.get(self.path.lstrip("/"))
        entry = {"path": self.path.lstrip("/"), "range": self.headers.get("Range"), "sent": 0}
        server.requests.append(entry)
        if data is None:
            self.send_error(404, "Not Found")
            return
        match = re.fullmatch(r"bytes=(\d+)-", entry["range"] or "")
        if match and not server.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.truncate.pop(entry["path"], None)  # drop the connection once, mid-body
        body = body[:cut] if cut is not None else body
        # Record before writing: the client may finish reading (and the test assert) before this
        # thread runs again after the write.
        entry["sent"] = len(body)
        self.wfile.write(body)
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass  # keep test output clean


@pytest.fixture()
def server():
    """An HTTP server on 127.0.0.1 in a thread, serving ``server.files``; shut down at the end."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = _covid_ct_files()
    httpd.requests = []
    httpd.ignore_range = False
    httpd.truncate = {}
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture()
def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _leftovers(root: Path) -> list[str]:
    """Anything half-written: .part files and staging folders."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(".part")
                  or ".partial-" in p.name)


def test_full_fetch_produces_the_published_layout(server, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="covtl.data.fetch"):
        folder = fetch("covid19-ct", tmp_path, base_url=server.url)
    assert folder == tmp_path / "covid-ct"
    images = sorted(p.relative_to(folder).as_posix() for p in (folder / "Images-processed").rglob("*.*"))
    assert images == [
        "Images-processed/CT_COVID/2020.02.10.20021584-p6-52%0.png",
        "Images-processed/CT_COVID/jpeg-inside.png",
        "Images-processed/CT_NonCOVID/0.jpg",
    ]
    for split in ("train", "val", "test"):
        assert (folder / f"Data-split/COVID/{split}CT_COVID.txt").read_text() == f"{split} covid list\n"
        assert (folder / f"Data-split/NonCOVID/CT_NonCOVID_{split}_id.csv").is_file()
    assert (folder / "NonCOVID-CT-MetaInfo.xlsx").read_bytes() == server.files["NonCOVID-CT-MetaInfo.xlsx"]
    assert not list(folder.rglob("__MACOSX")) and not _leftovers(tmp_path)
    assert not (tmp_path / DOWNLOADS_DIR).exists()
    # no published checksum: the sha256 of what was downloaded is recorded, and the log says so
    record = json.loads((tmp_path / FETCH_RECORD).read_text())["datasets"]["covid19-ct"]
    assert record["complete"] is True
    for path, data in server.files.items():
        assert record["files"][path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["files"][path]["url"] == f"{server.url}/{path}"
    assert "no published checksum" in caplog.text


def test_complete_folder_is_not_fetched_again(server, tmp_path, closed_port_url) -> None:
    fetch("covid19-ct", tmp_path, base_url=server.url)
    assert fetch("covid19-ct", tmp_path, base_url=closed_port_url) == tmp_path / "covid-ct"


def test_checksum_mismatch_raises_and_leaves_nothing(server, tmp_path) -> None:
    bad = dataclasses.replace(COVID.files[1], sha256="0" * 64)
    registry = {"covid19-ct": dataclasses.replace(COVID, files=(COVID.files[0], bad, *COVID.files[2:]))}
    with pytest.raises(ChecksumMismatchError, match="CT_NonCOVID.zip downloaded with sha256 .*expected 0000"):
        fetch("covid19-ct", tmp_path, registry=registry, base_url=server.url)
    assert not (tmp_path / "covid-ct").exists()
    assert not _leftovers(tmp_path)
    assert not list(tmp_path.rglob("CT_NonCOVID.zip"))


def test_published_checksum_that_matches_is_accepted(server, tmp_path) -> None:
    files = tuple(
        dataclasses.replace(f, sha256=hashlib.sha256(server.files[f.path]).hexdigest()) for f in COVID.files
    )
    registry = {"covid19-ct": dataclasses.replace(COVID, files=files)}
    folder = fetch("covid19-ct", tmp_path, registry=registry, base_url=server.url)
    record = json.loads((tmp_path / FETCH_RECORD).read_text())["datasets"]["covid19-ct"]
    assert (folder / "Images-processed/CT_NonCOVID/0.jpg").is_file()
    assert {f["checksum"] for f in record["files"].values()} == {"published"}


def test_partial_download_is_resumed_with_a_range_request(server, tmp_path) -> None:
    path = "Images-processed/CT_COVID.zip"
    data = server.files[path]
    half = len(data) // 2
    part = tmp_path / DOWNLOADS_DIR / "covid19-ct" / (path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:half])
    folder = fetch("covid19-ct", tmp_path, base_url=server.url)
    [request] = [r for r in server.requests if r["path"] == path]
    assert request["range"] == f"bytes={half}-"
    assert request["sent"] == len(data) - half
    assert (folder / "Images-processed/CT_COVID/jpeg-inside.png").is_file()
    record = json.loads((tmp_path / FETCH_RECORD).read_text())["datasets"]["covid19-ct"]
    assert record["files"][path]["sha256"] == hashlib.sha256(data).hexdigest()


def test_interrupted_transfer_keeps_the_part_and_the_next_fetch_resumes(server, tmp_path) -> None:
    path = "Images-processed/CT_NonCOVID.zip"
    data = server.files[path]
    server.truncate[path] = 100
    with pytest.raises(OfflineError, match="(?s)interrupted after 100 bytes.*run the fetch again"):
        fetch("covid19-ct", tmp_path, base_url=server.url)
    part = tmp_path / DOWNLOADS_DIR / "covid19-ct" / (path + ".part")
    assert part.read_bytes() == data[:100]
    assert not (tmp_path / "covid-ct").exists()
    server.requests.clear()
    folder = fetch("covid19-ct", tmp_path, base_url=server.url)
    resumed = [r for r in server.requests if r["path"] == path]
    assert resumed == [{"path": path, "range": "bytes=100-", "sent": len(data) - 100}]
    assert "Images-processed/CT_COVID.zip" not in [r["path"] for r in server.requests]  # kept, verified
    assert (folder / "Images-processed/CT_NonCOVID/0.jpg").read_bytes() == b"\xff\xd8\xff noncovid" * 30


def test_server_that_ignores_range_still_gives_the_right_file(server, tmp_path) -> None:
    server.ignore_range = True
    path = "Images-processed/CT_COVID.zip"
    data = server.files[path]
    dest = tmp_path / "CT_COVID.zip"
    (tmp_path / "CT_COVID.zip.part").write_bytes(b"garbage from an older download")
    got = download(f"{server.url}/{path}", dest, sha256=hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data and got == hashlib.sha256(data).hexdigest()
    [request] = server.requests
    assert request["range"] is not None and request["sent"] == len(data)
    assert not (tmp_path / "CT_COVID.zip.part").exists()


def test_stale_part_longer_than_the_file_starts_over(server, tmp_path) -> None:
    data = server.files["COVID-CT-MetaInfo.xlsx"]
    (tmp_path / "meta.xlsx.part").write_bytes(b"x" * (len(data) + 10))
    download(f"{server.url}/COVID-CT-MetaInfo.xlsx", tmp_path / "meta.xlsx")
    assert (tmp_path / "meta.xlsx").read_bytes() == data
    assert [r["range"] is not None for r in server.requests] == [True, False]  # 416, then from 0


def test_resumed_file_with_wrong_bytes_is_fetched_again_from_the_start(server, tmp_path) -> None:
    data = server.files["Images-processed/CT_COVID.zip"]
    (tmp_path / "c.zip.part").write_bytes(b"\0" * 100)  # not the file's first 100 bytes
    download(f"{server.url}/Images-processed/CT_COVID.zip", tmp_path / "c.zip",
             sha256=hashlib.sha256(data).hexdigest())
    assert (tmp_path / "c.zip").read_bytes() == data
    assert [r["sent"] for r in server.requests] == [len(data) - 100, len(data)]


def test_offline_error_names_the_url_and_the_manual_steps(tmp_path, closed_port_url) -> None:
    with pytest.raises(OfflineError) as caught:
        fetch("covid19-ct", tmp_path, base_url=closed_port_url, timeout=5)
    message = str(caught.value)
    assert isinstance(caught.value, OSError)
    assert f"cannot reach {closed_port_url}/Images-processed/CT_COVID.zip" in message
    assert "by hand" in message
    assert str(tmp_path / "covid-ct") in message
    assert "Images-processed/CT_COVID/*.png|*.jpg" in message
    assert "Data-split/NonCOVID/CT_NonCOVID_{train,val,test}_id.csv" in message
    assert not (tmp_path / "covid-ct").exists() and not _leftovers(tmp_path)


def test_server_that_never_answers_times_out_as_offline(tmp_path) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(OfflineError, match="cannot reach .*timed out"):
            fetch("covid19-ct", tmp_path, base_url=url, timeout=0.3)


def test_http_error_says_what_to_do_and_leaves_nothing(server, tmp_path) -> None:
    del server.files["Data-split/COVID/valCT_COVID.txt"]
    with pytest.raises(FetchError, match="(?s)valCT_COVID.txt answered HTTP 404.*by hand"):
        fetch("covid19-ct", tmp_path, base_url=server.url)
    assert not (tmp_path / "covid-ct").exists() and not _leftovers(tmp_path)


def test_verified_downloads_are_not_fetched_twice(server, tmp_path) -> None:
    del server.files["NonCOVID-CT-MetaInfo.xlsx"]
    with pytest.raises(FetchError):
        fetch("covid19-ct", tmp_path, base_url=server.url)
    server.files["NonCOVID-CT-MetaInfo.xlsx"] = b"File name,Patient ID\n"
    server.requests.clear()
    fetch("covid19-ct", tmp_path, base_url=server.url)
    assert [r["path"] for r in server.requests] == ["NonCOVID-CT-MetaInfo.xlsx"]


def test_not_a_zip_is_refused_and_deleted(server, tmp_path) -> None:
    server.files["Images-processed/CT_COVID.zip"] = b"<html>rate limited</html>"
    with pytest.raises(FetchError, match="not a valid zip archive"):
        fetch("covid19-ct", tmp_path, base_url=server.url, keep_downloads=True)
    assert not (tmp_path / "covid-ct").exists() and not _leftovers(tmp_path)
    assert not (tmp_path / DOWNLOADS_DIR / "covid19-ct" / "Images-processed" / "CT_COVID.zip").exists()


def test_zip_member_outside_the_folder_is_refused(server, tmp_path) -> None:
    server.files["Images-processed/CT_COVID.zip"] = _zip({"../../evil.png": b"x"})
    with pytest.raises(FetchError, match="outside the dataset folder"):
        fetch("covid19-ct", tmp_path, base_url=server.url)
    assert not (tmp_path.parent / "evil.png").exists() and not (tmp_path / "covid-ct").exists()


def test_incomplete_existing_folder_is_left_alone(server, tmp_path) -> None:
    (tmp_path / "covid-ct" / "Images-processed" / "CT_COVID").mkdir(parents=True)
    with pytest.raises(FetchError, match="exists but lacks .*Move it aside"):
        fetch("covid19-ct", tmp_path, base_url=server.url)
    assert server.requests == []


def test_tiny_imagenet_becomes_an_image_folder(server, tmp_path) -> None:
    top = "tiny-imagenet-200"
    server.files["tiny-imagenet-200.zip"] = _zip({
        f"{top}/wnids.txt": b"n02\nn01\n",
        f"{top}/words.txt": b"n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tbullfrog\n",
        f"{top}/train/n01/images/n01_0.JPEG": b"jpeg a",
        f"{top}/train/n01/n01_boxes.txt": b"n01_0.JPEG\t0\t0\t63\t63\n",
        f"{top}/train/n02/images/n02_0.JPEG": b"jpeg b",
        f"{top}/val/images/val_0.JPEG": b"jpeg c",
        f"{top}/val/images/val_1.JPEG": b"jpeg d",
        f"{top}/val/val_annotations.txt": b"val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t1\t1\t9\t9\n",
        f"{top}/test/images/test_0.JPEG": b"jpeg e",
    })
    folder = fetch("tiny-imagenet-200", tmp_path, base_url=server.url)
    assert folder == tmp_path / "natural" / "tiny-imagenet-200"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["classes.tsv", "train/n01/n01_0.JPEG", "train/n02/n02_0.JPEG",
                     "val/n01/val_1.JPEG", "val/n02/val_0.JPEG"]
    assert (folder / "classes.tsv").read_text() == "0\tn01\tgoldfish, Carassius auratus\n1\tn02\tbullfrog\n"


def test_unknown_dataset_lists_the_valid_ones(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'covidx'.*covid19-ct, tiny-imagenet-200"):
        fetch("covidx", tmp_path)


def test_registry_urls_are_the_published_ones() -> None:
    urls = [COVID.url(f) for f in COVID.files]
    assert "https://github.com/UCSD-AI4H/COVID-CT/raw/master/Images-processed/CT_COVID.zip" in urls
    assert len(urls) == 13 and all(f.sha256 is None for f in COVID.files)  # none published
    tiny = REGISTRY["tiny-imagenet-200"]
    assert tiny.url(tiny.files[0]) == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    assert "tiny-imagenet-200.zip" in manual_instructions("tiny-imagenet-200", "/data")


def test_fetch_main_reports_each_dataset(server, tmp_path, closed_port_url) -> None:
    out = io.StringIO()
    assert fetch_main(["covid19-ct"], tmp_path, base_url=server.url, out=out) == 0
    assert f"covid19-ct: {tmp_path / 'covid-ct'}" in out.getvalue()
    out = io.StringIO()
    assert fetch_main(["tiny-imagenet-200", "nope"], tmp_path, base_url=closed_port_url, out=out) == 1
    assert "tiny-imagenet-200: FAILED" in out.getvalue() and "unknown dataset 'nope'" in out.getvalue()
