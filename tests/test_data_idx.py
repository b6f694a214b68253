"""IDX parsing, MNIST-style folders, and downloads against a local HTTP server."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import logging
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import DataConfig, load_data
from vaelab.data.download import Resource
from vaelab.data.idx import read_idx
from vaelab.data.mnist import IDX_DATASETS, IDX_STEMS
from vaelab.errors import VaelabError

N_TRAIN, N_TEST, SIDE = 12, 5, 4


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic (0, 0, 0x08, ndim), big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def synthetic_mnist(seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays for the four IDX stems: small images (N, 4, 4) and labels 0..9."""
    rng = np.random.default_rng(seed)
    return {
        IDX_STEMS[0]: rng.integers(0, 256, (N_TRAIN, SIDE, SIDE), dtype=np.uint8),
        IDX_STEMS[1]: rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        IDX_STEMS[2]: rng.integers(0, 256, (N_TEST, SIDE, SIDE), dtype=np.uint8),
        IDX_STEMS[3]: rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }


def write_idx_folder(folder: Path, arrays: dict[str, np.ndarray], *, gz: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / stem).write_bytes(idx_bytes(array))


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No VAELAB_DATA, a private cache, and no proxies for 127.0.0.1."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    return tmp_path / "cache"


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    write_idx_folder(tmp_path, {"a": array}, gz=gz)
    loaded = read_idx(tmp_path / ("a.gz" if gz else "a"))
    assert loaded.dtype == np.uint8 and np.array_equal(loaded, array)


def test_read_idx_big_endian_int32(tmp_path):
    array = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + array.tobytes())
    assert read_idx(tmp_path / "b").tolist() == [1, -2, 70000]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("magic", b"\x01\x02\x08\x01" + b"\x00" * 8, "bad magic"),
        ("short", b"\x00\x00", "bad magic"),
        ("header", b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        ("truncated", idx_bytes(np.zeros((3, 4, 4)))[:-5], "truncated"),
        ("trailing", idx_bytes(np.zeros((3, 4, 4))) + b"\x00", "trailing bytes"),
    ],
)
def test_read_idx_rejects_malformed(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VaelabError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((30, 4, 4))))[:-12])
    with pytest.raises(VaelabError, match="x.gz"):
        read_idx(path)


@pytest.mark.parametrize("layout", ["subfolder", "flat"])
def test_mnist_from_data_dir(tmp_path, isolated_env, layout):
    arrays = synthetic_mnist()
    folder = tmp_path / "data" / "mnist" if layout == "subfolder" else tmp_path / "data"
    write_idx_folder(folder, arrays, gz=layout == "flat")
    config = DataConfig(dataset="mnist", data_dir=str(tmp_path / "data"), download=False)
    splits = load_data(config, progress=False)
    assert splits.shape == (1, SIDE, SIDE)
    assert splits.class_names == tuple(str(d) for d in range(10))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (11, 1, N_TEST)
    # The official test split is kept whole and in order.
    expected = torch.from_numpy(arrays[IDX_STEMS[2]]).float().unsqueeze(1) / 255
    assert torch.equal(splits.test.x, expected)
    assert splits.test.y.tolist() == arrays[IDX_STEMS[3]].tolist()
    pool = torch.cat([splits.train.y, splits.val.y]).sort().values
    assert pool.tolist() == sorted(arrays[IDX_STEMS[1]].tolist())


def test_fashion_mnist_from_env(tmp_path, isolated_env, monkeypatch):
    write_idx_folder(tmp_path / "data" / "fashion-mnist", synthetic_mnist(), gz=True)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    splits = load_data(DataConfig(dataset="fashion-mnist", download=False), progress=False)
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    assert len(splits.test) == N_TEST


def test_mnist_absent_without_download(isolated_env):
    with pytest.raises(VaelabError, match="MNIST files not found.*VAELAB_DATA") as info:
        load_data(DataConfig(dataset="mnist", download=False), progress=False)
    assert str(isolated_env / "mnist") in str(info.value)


def pretend_mnist(monkeypatch, arrays: dict[str, np.ndarray]) -> None:
    """Make `arrays`' train images MNIST's as far as the md5 check knows (uncompressed bytes)."""
    md5 = hashlib.md5(idx_bytes(arrays[IDX_STEMS[0]])).hexdigest()
    table = dataclasses.replace(IDX_DATASETS["mnist"], train_images_md5=md5)
    monkeypatch.setitem(IDX_DATASETS, "mnist", table)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_refuses_flat_mnist_files(tmp_path, isolated_env, monkeypatch, gz):
    arrays = synthetic_mnist()
    write_idx_folder(tmp_path / "data", arrays, gz=gz)
    pretend_mnist(monkeypatch, arrays)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    data = tmp_path / "data"
    message = (
        f"the IDX files in {data} are MNIST, not Fashion-MNIST; put Fashion-MNIST's files in "
        f"{data / 'fashion-mnist'}"
    )
    with pytest.raises(VaelabError) as info:
        load_data(DataConfig(dataset="fashion-mnist", download=False), progress=False)
    assert str(info.value) == message
    assert len(load_data(DataConfig(dataset="mnist"), progress=False).test) == N_TEST


def test_fashion_mnist_refuses_mnist_files_in_its_own_folder(tmp_path, isolated_env, monkeypatch):
    arrays = synthetic_mnist()
    write_idx_folder(tmp_path / "fashion-mnist", arrays, gz=True)
    pretend_mnist(monkeypatch, arrays)
    config = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), download=False)
    with pytest.raises(VaelabError, match="are MNIST, not Fashion-MNIST; replace them"):
        load_data(config, progress=False)


def test_named_subfolder_preferred_over_flat_files(tmp_path, isolated_env, monkeypatch):
    mnist = synthetic_mnist(seed=0)
    write_idx_folder(tmp_path / "data", mnist, gz=False)  # MNIST's, flat
    pretend_mnist(monkeypatch, mnist)
    fashion = synthetic_mnist(seed=1)
    write_idx_folder(tmp_path / "data" / "fashion-mnist", fashion, gz=True)
    config = DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path / "data"))
    splits = load_data(config, progress=False)
    assert splits.test.y.tolist() == fashion[IDX_STEMS[3]].tolist()


def test_real_mnist_refused_as_fashion_mnist(tmp_path, monkeypatch):
    root = os.environ.get("VAELAB_DATA")
    if not root or not list((Path(root) / "mnist").glob("train-images-idx3-ubyte*")):
        pytest.skip("VAELAB_DATA not set: point it at a folder holding mnist/*.gz to run this")
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in (Path(root) / "mnist").glob("*-ubyte*"):
        (flat / path.name).symlink_to(path)
    config = DataConfig(dataset="fashion-mnist", data_dir=str(flat), download=False)
    with pytest.raises(VaelabError, match="are MNIST, not Fashion-MNIST"):
        load_data(config, progress=False)


def test_mnist_mismatched_label_count(tmp_path, isolated_env):
    arrays = synthetic_mnist()
    arrays[IDX_STEMS[1]] = arrays[IDX_STEMS[1]][:-1]
    write_idx_folder(tmp_path / "mnist", arrays, gz=False)
    with pytest.raises(VaelabError, match="train-labels-idx1-ubyte"):
        load_data(DataConfig(dataset="mnist", data_dir=str(tmp_path)), progress=False)


# --- downloads from a local server -------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, int | None]] = {}  # path -> (status, body, length)
    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        type(self).hits.append(self.path)
        status, body, length = type(self).routes.get(self.path, (404, b"missing", None))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True  # with a too-large Content-Length: a dropped connection

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("Handler", (_Handler,), {"routes": {}, "hits": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def serve_mnist(handler, monkeypatch, mirrors, *, prefix="/good/") -> dict[str, np.ndarray]:
    """Serve synthetic .gz files under `prefix` and point the MNIST table at `mirrors`."""
    arrays = synthetic_mnist()
    resources = []
    for stem, array in arrays.items():
        body = gzip.compress(idx_bytes(array))
        handler.routes[f"{prefix}{stem}.gz"] = (200, body, None)
        resources.append(Resource(f"{stem}.gz", hashlib.md5(body).hexdigest(), tuple(mirrors)))
    table = dataclasses.replace(IDX_DATASETS["mnist"], resources=tuple(resources))
    monkeypatch.setitem(IDX_DATASETS, "mnist", table)
    return arrays


def test_download_verifies_and_caches(server, isolated_env, monkeypatch):
    handler, url = server
    arrays = serve_mnist(handler, monkeypatch, [f"{url}/good/"])
    splits = load_data(DataConfig(dataset="mnist"), progress=False)
    assert len(handler.hits) == 4
    assert sorted(p.name for p in (isolated_env / "mnist").iterdir()) == sorted(
        f"{stem}.gz" for stem in IDX_STEMS
    )
    assert splits.test.y.tolist() == arrays[IDX_STEMS[3]].tolist()
    again = load_data(DataConfig(dataset="mnist"), progress=True)
    assert len(handler.hits) == 4  # served from the cache
    assert torch.equal(again.train.x, splits.train.x)


def test_download_md5_mismatch_leaves_nothing(server, isolated_env, monkeypatch):
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/good/"])
    path = f"/good/{IDX_STEMS[0]}.gz"
    status, body, _ = handler.routes[path]
    handler.routes[path] = (status, body[:-1] + bytes([body[-1] ^ 1]), None)
    with pytest.raises(VaelabError, match="could not download MNIST file .*md5 mismatch"):
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert not isolated_env.exists()  # no .part file, and no empty cache folder it made


def test_download_dropped_connection_leaves_nothing(server, isolated_env, monkeypatch):
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/good/"])
    path = f"/good/{IDX_STEMS[0]}.gz"
    status, body, _ = handler.routes[path]
    handler.routes[path] = (status, body[: len(body) // 2], len(body))
    with pytest.raises(VaelabError, match="could not download MNIST file.*connection") as info:
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert "put the four IDX files" in str(info.value) and "\n" not in str(info.value)
    assert not isolated_env.exists()  # no .part file, and no empty cache folder it made


def test_download_falls_back_to_second_mirror(server, isolated_env, monkeypatch):
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/missing/", f"{url}/good/"])
    splits = load_data(DataConfig(dataset="mnist"), progress=False)
    assert len(splits.test) == N_TEST
    assert sum(h.startswith("/missing/") for h in handler.hits) == 4
    assert sum(h.startswith("/good/") for h in handler.hits) == 4


def test_download_all_mirrors_fail(server, isolated_env, monkeypatch):
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/missing/"])
    with pytest.raises(VaelabError, match=r"train-images-idx3-ubyte.gz \(.*HTTP 404"):
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert not isolated_env.exists()  # no .part file, and no empty cache folder it made


@pytest.mark.parametrize("via", ["data_dir", "VAELAB_DATA"])
def test_download_failure_is_one_error_naming_every_place(
    server, isolated_env, monkeypatch, caplog, tmp_path, via
):
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/missing/", f"{url}/gone/"])
    data = tmp_path / "data"
    data.mkdir()
    if via == "VAELAB_DATA":
        monkeypatch.setenv("VAELAB_DATA", str(data))
    config = DataConfig(dataset="mnist", data_dir=str(data) if via == "data_dir" else None)
    caplog.set_level(logging.DEBUG, logger="vaelab")
    with pytest.raises(VaelabError) as info:
        load_data(config, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"{url}/gone/train-images-idx3-ubyte.gz: HTTP 404" in message  # the last reason
    assert f"after looking in {data / 'mnist'}, {data} and the cache {isolated_env / 'mnist'};" in (
        message
    )
    # Per-mirror failures are debug chatter: nothing at warning level precedes the error.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum("download failed" in r.getMessage() for r in caplog.records) == 2


def test_download_interrupted_leaves_nothing(server, isolated_env, monkeypatch):
    import vaelab.data.download as download_module

    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/good/"])

    class InterruptingBar:  # stands in for tqdm: Ctrl-C after the first chunk was written
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            assert list((isolated_env / "mnist").glob("*.part")), "expected a .part file"
            raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "tqdm", InterruptingBar)
    with pytest.raises(KeyboardInterrupt):
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert not isolated_env.exists()  # no .part file, and no empty cache folder it made


def test_failed_download_keeps_folders_that_were_there_or_hold_files(
    server, isolated_env, monkeypatch
):
    """Only the (empty) folders the failed attempt created go; an existing cache folder stays,
    and so does one holding a file an earlier attempt downloaded."""
    handler, url = server
    serve_mnist(handler, monkeypatch, [f"{url}/good/"])
    (isolated_env / "mnist").mkdir(parents=True)  # there before, empty
    del handler.routes[f"/good/{IDX_STEMS[0]}.gz"]
    with pytest.raises(VaelabError, match="could not download"):
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert list((isolated_env / "mnist").iterdir()) == []
    (isolated_env / "mnist").rmdir()
    serve_mnist(handler, monkeypatch, [f"{url}/good/"])
    del handler.routes[f"/good/{IDX_STEMS[1]}.gz"]  # the first file arrives, the second fails
    with pytest.raises(VaelabError, match="could not download"):
        load_data(DataConfig(dataset="mnist"), progress=False)
    assert [p.name for p in (isolated_env / "mnist").iterdir()] == [f"{IDX_STEMS[0]}.gz"]


# --- the real data set, when available ---------------------------------------------------------


def test_real_mnist_from_vaelab_data():
    if not os.environ.get("VAELAB_DATA"):
        pytest.skip("VAELAB_DATA not set: point it at a folder holding mnist/*.gz to run this")
    root = Path(os.environ["VAELAB_DATA"])
    images = next((root / "mnist").glob("train-images-idx3-ubyte*"), None)
    if images is None:
        pytest.skip(f"VAELAB_DATA={root} holds no mnist/train-images-idx3-ubyte[.gz]")
    raw = gzip.decompress(images.read_bytes()) if images.suffix == ".gz" else images.read_bytes()
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
    splits = load_data(DataConfig(dataset="mnist", download=False), progress=False)
    assert splits.shape == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == 60000 and len(splits.test) == 10000
    assert len(splits.val) == 6000
