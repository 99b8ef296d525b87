"""Weights: local files, the torch cache, an opt-in download, and clear errors for bad files."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from covtl.models import build_model
from covtl.models.weights import download_file, read_state_dict


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torch hub folder for the test (so the user's cache is never touched)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield Path(torch.hub.get_dir()) / "checkpoints"
    torch.hub.set_dir(old)


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/www; yields (root folder, base url)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_torchvision_weights_missing_from_cache_say_where_to_put_them(torch_cache):
    with pytest.raises(FileNotFoundError) as err:
        build_model("resnet18", weights="IMAGENET1K_V1")
    message = str(err.value)
    assert str(torch_cache / "resnet18-f37072fd.pth") in message
    assert "download.pytorch.org" in message and "by hand" in message


def test_torchvision_weights_from_cache_load_and_reset_the_head(torch_cache):
    torch.manual_seed(0)
    source = build_model("resnet18", num_classes=1000)
    torch_cache.mkdir(parents=True)
    torch.save(source.state_dict(), torch_cache / "resnet18-f37072fd.pth")
    for weights in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        model = build_model("resnet18", num_classes=2, weights=weights)
        assert model.load_report.head_reset == ["fc.weight", "fc.bias"]
        torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
        assert model.fc.out_features == 2


def test_unknown_torchvision_weights_name_lists_the_valid_ones(torch_cache):
    with pytest.raises(ValueError, match="unknown torchvision weights 'IMAGENET22K'.*IMAGENET1K_V1"):
        build_model("resnet50", weights="IMAGENET22K")


def test_missing_local_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("resnet18", weights=tmp_path / "nope.pt")


def test_corrupt_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="cannot read weights file .*corrupt.pt"):
        build_model("resnet18", weights=path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": Path("/etc/passwd")}, path)  # an arbitrary object, not tensors
    with pytest.raises(ValueError, match="cannot read weights file"):
        read_state_dict(path)


def test_file_without_a_state_dict_raises(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds no state dict"):
        read_state_dict(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18").state_dict(), path)
    with pytest.raises(ValueError, match="weights do not fit AttnResNet.*shape mismatches"):
        build_model("resnet50", weights=path)
    torch.save(build_model("resnet50", n_attn=1).state_dict(), path)
    with pytest.raises(ValueError, match="keys the model does not have"):
        build_model("resnet50", weights=path)  # attention weights into a plain network


def test_checkpoint_dicts_and_dataparallel_prefixes_load(tmp_path):
    source = build_model("crnet", num_classes=2)
    path = tmp_path / "ckpt.pt"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": state, "epoch": 3}, path)
    model = build_model("crnet", num_classes=2, weights=path)
    torch.testing.assert_close(model.fc.weight, source.fc.weight)


def test_old_densenet_key_names_are_renamed(tmp_path):
    source = build_model("densenet121")
    old = {}
    for k, v in source.state_dict().items():
        for part in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            k = k.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.") if "denselayer" in k else k
        old[k] = v
    assert any(".norm.1." in k for k in old)
    path = tmp_path / "densenet121-a639ec97.pth"
    torch.save(old, path)
    model = build_model("densenet121", weights=path)
    torch.testing.assert_close(model.state_dict(), source.state_dict())


def test_download_is_atomic_and_hash_checked(tmp_path, file_server):
    root, url = file_server
    payload = b"weights" * 1000
    (root / "w.pth").write_bytes(payload)
    good = hashlib.sha256(payload).hexdigest()[:8]
    dest = tmp_path / "cache" / "w.pth"
    assert download_file(f"{url}/w.pth", dest, good).read_bytes() == payload
    dest.unlink()
    with pytest.raises(ValueError, match="expected it to start with 00000000"):
        download_file(f"{url}/w.pth", dest, "00000000")
    assert list(dest.parent.iterdir()) == []  # nothing half-written is left behind


def test_opt_in_download_of_torchvision_weights(torch_cache, file_server, monkeypatch):
    root, url = file_server
    monkeypatch.setenv("COVTL_WEIGHTS_MIRROR", url)
    torch.save(build_model("resnet18").state_dict(), root / "resnet18-f37072fd.pth")
    with pytest.raises(ValueError, match="sha256"):  # our file is not the published one
        build_model("resnet18", weights="IMAGENET1K_V1", download=True)
    assert not (torch_cache / "resnet18-f37072fd.pth").exists()
