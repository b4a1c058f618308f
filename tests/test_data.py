"""edgefashion.data: IDX files, verified downloads, Fashion-MNIST, class-folder photo data sets.

Real data comes from $EDGEFASHION_DATA (default ../shared/data beside the repository). Downloads are only
ever made from a local http.server on 127.0.0.1 or from file:// URLs.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import threading
import warnings
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgefashion.data import (CLOTHING_SMALL_URL, FASHION_MNIST_LABELS, DataError, FolderDataset, download,
                              download_first, ensure_clothing_small, load_fashion_mnist, load_folder_dataset,
                              load_images, load_splits, read_idx, read_image, resolve_data_root, resolve_dataset,
                              SplitSpec, stratified_split, stratified_subset)
from edgefashion.data.splits import carve
from edgefashion.meta import ModelMeta
from edgefashion.data.fashion_mnist import FASHION_MNIST_FILES, FASHION_MNIST_SHA256
from edgefashion.data.folders import find_splits, list_class_folder
from edgefashion.data.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
FM_NAMES = [name for pair in FASHION_MNIST_FILES.values() for name in pair]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("EDGEFASHION_DATA") or REPO.parent / "shared" / "data").resolve()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} is missing: set EDGEFASHION_DATA to the project's data root")
    return root


# --- helpers -----------------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """IDX bytes built by hand (independent of the writer under test)."""
    be = array.astype(array.dtype.newbyteorder(">"))
    return bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + be.tobytes()


def write_jpg(path: Path, seed: int, size=(24, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def make_class_tree(root: Path, counts: dict, ext: str = ".jpg") -> Path:
    seed = 0
    for cls, n in counts.items():
        for i in range(n):
            seed += 1
            write_jpg(root / cls / f"{cls}_{i:03d}{ext}", seed)
    return root


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """(folder, base URL) of a local HTTP server serving that folder."""
    # A proxy set in the environment must not see requests to the local server.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- resolve_data_root / resolve_dataset / import hygiene ----------------------------------------------------

def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEFASHION_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("EDGEFASHION_DATA")
    assert resolve_data_root(None) == Path.home() / ".cache" / "edgefashion"


def test_resolve_dataset(tmp_path, monkeypatch):
    make_class_tree(tmp_path / "root" / "mine", {"a": 2, "b": 2})
    root = tmp_path / "root"
    assert resolve_dataset("fashion-mnist", root) == ("fashion-mnist", root / "fashion-mnist")
    mine = (root / "mine").resolve()
    assert resolve_dataset(str(root / "mine"), tmp_path) == ("folder", mine)
    assert resolve_dataset("mine", root) == ("folder", mine)  # relative to the data root
    monkeypatch.chdir(root / "mine")
    assert resolve_dataset("../mine", tmp_path / "elsewhere") == ("folder", mine)  # relative to cwd
    assert resolve_dataset(".", tmp_path / "elsewhere")[1].name == "mine"
    with pytest.raises(DataError, match="unknown data set 'nope': not 'fashion-mnist', 'clothing-small'"):
        resolve_dataset("nope", root)
    with pytest.raises(DataError, match="clothing-small"):
        resolve_dataset("clothing-small", root, download=False)


def test_package_imports_no_torch_and_touches_nothing(tmp_path):
    code = ("import sys, edgefashion.data as d; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert callable(d.load_fashion_mnist)")
    env = {**os.environ, "HOME": str(tmp_path), "EDGEFASHION_DATA": str(tmp_path / "data")}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=env, timeout=60)
    assert leftovers(tmp_path) == []


# --- IDX -----------------------------------------------------------------------------------------------------

def test_read_idx_real_files(shared_data):
    folder = shared_data / "fashion-mnist"
    expected = {"train-images-idx3-ubyte.gz": (60000, 28, 28), "train-labels-idx1-ubyte.gz": (60000,),
                "t10k-images-idx3-ubyte.gz": (10000, 28, 28), "t10k-labels-idx1-ubyte.gz": (10000,)}
    for name, shape in expected.items():
        a = read_idx(folder / name)
        assert a.shape == shape and a.dtype == np.uint8, name
        if a.ndim == 1:
            assert a.min() == 0 and a.max() == 9
            assert np.all(np.bincount(a) == len(a) // 10)  # Fashion-MNIST is balanced
        else:
            assert a.max() == 255 and a.flags.writeable


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
                                        (np.float32, 0x0D), (np.float64, 0x0E)])
def test_idx_round_trip_raw_and_gzip(tmp_path, dtype, code):
    a = (np.arange(2 * 3 * 5).reshape(2, 3, 5) - 7).astype(dtype)
    blob = idx_bytes(a, code)
    # Compression is recognised by its magic bytes, not by the file name.
    (tmp_path / "raw.gz").write_bytes(blob)
    (tmp_path / "packed.idx").write_bytes(gzip.compress(blob))
    for name in ("raw.gz", "packed.idx"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.dtype(dtype) and got.dtype.isnative
        np.testing.assert_array_equal(got, a)
    assert write_idx(tmp_path / "w.idx", a).read_bytes() == blob
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "w.gz", a, compress=True)), a)


def test_idx_multi_member_gzip(tmp_path):
    blob = idx_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10))
    (tmp_path / "m.gz").write_bytes(gzip.compress(blob[:37]) + gzip.compress(blob[37:]))
    np.testing.assert_array_equal(read_idx(tmp_path / "m.gz"), np.arange(100).reshape(10, 10))


def test_idx_truncated_raw(tmp_path):
    blob = idx_bytes(np.zeros((4, 5, 5), np.uint8))
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(blob[:-10])
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert "short-idx3-ubyte" in msg and "truncated" in msg and "expected 100 bytes of data, found 90" in msg
    assert "\n" not in msg
    path.write_bytes(blob[:6])  # inside the header
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_idx_truncated_real_gzip(shared_data, tmp_path):
    raw = (shared_data / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and "truncated" in str(e.value)
    assert "expected 10000 bytes of data" in str(e.value)


def test_idx_trailing_data(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.zeros(10, np.uint8)) + b"junk")
    with pytest.raises(DataError, match=r"long\.idx: 4 bytes of trailing data"):
        read_idx(path)


def test_idx_bad_header(tmp_path):
    bad_magic = tmp_path / "bad_magic.idx"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match=r"bad_magic\.idx: not an IDX file"):
        read_idx(bad_magic)
    bad_code = tmp_path / "bad_code.idx"
    bad_code.write_bytes(b"\x00\x00\x42\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match=r"bad_code\.idx: unsupported IDX data type code 0x42"):
        read_idx(bad_code)
    tiny = tmp_path / "tiny.idx"
    tiny.write_bytes(b"\x00")
    with pytest.raises(DataError, match=r"tiny\.idx"):
        read_idx(tiny)
    with pytest.raises(DataError, match=r"missing\.idx: cannot read"):
        read_idx(tmp_path / "missing.idx")


def test_idx_corrupt_gzip(tmp_path):
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"\x1f\x8b" + np.random.default_rng(0).bytes(200))
    with pytest.raises(DataError, match=r"junk\.gz: corrupt gzip"):
        read_idx(junk)
    # Valid framing, damaged payload: caught by the deflate decoder or the CRC.
    packed = bytearray(gzip.compress(idx_bytes(np.random.default_rng(1).integers(0, 255, 5000, np.uint8))))
    packed[len(packed) // 2] ^= 0xFF
    packed[-8] ^= 0xFF
    flipped = tmp_path / "flipped.gz"
    flipped.write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"flipped\.gz: corrupt gzip"):
        read_idx(flipped)


# --- download ------------------------------------------------------------------------------------------------

def test_download_http_verified(http_dir, tmp_path, capsys):
    served, base = http_dir
    payload = np.random.default_rng(0).bytes(3 * 1024 * 1024 + 17)
    (served / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    got = download(f"{base}/blob.bin", dest, sha256=hashlib.sha256(payload).hexdigest(),
                   md5=hashlib.md5(payload).hexdigest().upper())
    assert got == dest and dest.read_bytes() == payload
    assert leftovers(dest.parent) == ["blob.bin"]
    assert f"downloading {base}/blob.bin -> {dest}" in capsys.readouterr().err


def test_download_checksum_mismatch_leaves_nothing(http_dir, tmp_path):
    served, base = http_dir
    (served / "blob.bin").write_bytes(b"hello")
    dest = tmp_path / "out" / "blob.bin"
    with pytest.raises(DataError) as e:
        download(f"{base}/blob.bin", dest, sha256="0" * 64, progress=False)
    msg = str(e.value)
    assert f"{base}/blob.bin" in msg and "checksum mismatch" in msg and "0" * 64 in msg
    assert hashlib.sha256(b"hello").hexdigest() in msg
    assert leftovers(dest.parent) == []
    with pytest.raises(DataError, match="expected md5"):
        download(f"{base}/blob.bin", dest, md5="f" * 32, progress=False)
    assert leftovers(dest.parent) == []


def test_download_http_404(http_dir, tmp_path):
    _, base = http_dir
    dest = tmp_path / "out" / "x.gz"
    with pytest.raises(DataError, match=r"HTTP 404") as e:
        download(f"{base}/missing.gz", dest)
    assert f"{base}/missing.gz" in str(e.value)
    assert leftovers(dest.parent) == []


def test_download_connection_refused(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DataError, match=f"127.0.0.1:{port}/x"):
        download(f"http://127.0.0.1:{port}/x", tmp_path / "x", timeout=5)
    assert leftovers(tmp_path) == []


def test_download_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc" * 1000)
    dest = tmp_path / "dl" / "copy.bin"
    download(src.as_uri(), dest, sha256=hashlib.sha256(b"abc" * 1000).hexdigest())
    assert dest.read_bytes() == b"abc" * 1000
    with pytest.raises(DataError):
        download((tmp_path / "nope.bin").as_uri(), tmp_path / "dl" / "nope.bin")
    assert leftovers(tmp_path / "dl") == ["copy.bin"]


def test_download_ctrl_c_removes_part_file(tmp_path, monkeypatch):
    import urllib.request

    class Interrupted:
        headers = {"Content-Length": "100"}

        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls > 1:
                raise KeyboardInterrupt
            return b"x" * 10

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Interrupted())
    dest = tmp_path / "dl" / "big.bin"
    with pytest.raises(DataError, match="interrupted"):
        download_first(["http://example.invalid/a", "http://example.invalid/b"], dest, progress=False)
    assert leftovers(dest.parent) == []


def test_download_first_falls_back_and_reports_all(http_dir, tmp_path):
    served, base = http_dir
    (served / "good").mkdir()
    (served / "good" / "f.txt").write_bytes(b"ok")
    dest = tmp_path / "f.txt"
    download_first([f"{base}/bad/f.txt", f"{base}/good/f.txt"], dest, progress=False)
    assert dest.read_bytes() == b"ok"
    with pytest.raises(DataError) as e:
        download_first([f"{base}/bad/g.txt", f"{base}/worse/g.txt"], tmp_path / "g.txt")
    msg = str(e.value)
    assert f"{base}/bad/g.txt" in msg and f"{base}/worse/g.txt" in msg and "\n" not in msg
    assert not (tmp_path / "g.txt").exists()


# --- Fashion-MNIST -------------------------------------------------------------------------------------------

def check_fashion_mnist(data: dict) -> None:
    assert set(data) == {"train", "test"}
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = data[split]
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64 and y.min() == 0 and y.max() == 9


def test_fashion_mnist_labels():
    assert FASHION_MNIST_LABELS == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                    "Sneaker", "Bag", "Ankle boot")


def test_load_fashion_mnist_shared(shared_data):
    kind, folder = resolve_dataset("fashion-mnist", shared_data)
    assert (kind, folder) == ("fashion-mnist", shared_data / "fashion-mnist")
    assert resolve_dataset(str(folder), shared_data, download=False) == ("fashion-mnist", folder.resolve())
    data = load_fashion_mnist(shared_data, download=False)
    check_fashion_mnist(data)
    # The pinned checksums are those of this (official) content.
    for name in FM_NAMES:
        assert hashlib.sha256(gzip.decompress((folder / name).read_bytes())).hexdigest() == \
            FASHION_MNIST_SHA256[name]
    # The folder itself is accepted as the root too.
    np.testing.assert_array_equal(load_fashion_mnist(folder, download=False)["test"][1], data["test"][1])


def test_load_fashion_mnist_downloads_from_mirror(shared_data, http_dir, tmp_path, capsys):
    served, base = http_dir
    mirror = served / "fm"
    mirror.mkdir()
    for name in FM_NAMES:
        shutil.copyfile(shared_data / "fashion-mnist" / name, mirror / name)
    root = tmp_path / "root"
    # The first mirror has nothing (404): every file comes from the second.
    data = load_fashion_mnist(root, download=True, mirrors=[f"{base}/gone/", f"{base}/fm"])
    check_fashion_mnist(data)
    assert leftovers(root / "fashion-mnist") == sorted(FM_NAMES)
    err = capsys.readouterr().err
    assert err.count(f"downloading {base}/gone/") == 4 and err.count(f"downloading {base}/fm/") == 4
    # Present now: nothing more is fetched.
    check_fashion_mnist(load_fashion_mnist(root, download=True, mirrors=[f"{base}/gone/"]))
    assert "downloading" not in capsys.readouterr().err


def test_load_fashion_mnist_rejects_wrong_content(shared_data, http_dir, tmp_path):
    served, base = http_dir
    # Well-formed IDX files of the right names but the wrong content (test labels served as train labels).
    for name in FM_NAMES:
        src = "t10k-labels-idx1-ubyte.gz" if name == "train-labels-idx1-ubyte.gz" else name
        if "images" not in name:
            shutil.copyfile(shared_data / "fashion-mnist" / src, served / name)
    root = tmp_path / "root"
    folder = root / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in FM_NAMES:  # only the train labels are missing locally
        if name != "train-labels-idx1-ubyte.gz":
            (folder / name).symlink_to(shared_data / "fashion-mnist" / name)
    with pytest.raises(DataError) as e:
        load_fashion_mnist(root, mirrors=[base])
    msg = str(e.value)
    assert "train-labels-idx1-ubyte.gz" in msg and "checksum mismatch" in msg
    assert FASHION_MNIST_SHA256["train-labels-idx1-ubyte.gz"] in msg
    assert not (folder / "train-labels-idx1-ubyte.gz").exists()
    assert not (folder / "train-labels-idx1-ubyte.gz.part").exists()


def test_load_fashion_mnist_raw_files(shared_data, tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in FM_NAMES:
        (folder / name[:-3]).write_bytes(gzip.decompress((shared_data / "fashion-mnist" / name).read_bytes()))
    data = load_fashion_mnist(tmp_path, download=False)
    check_fashion_mnist(data)
    ref = load_fashion_mnist(shared_data, download=False)
    np.testing.assert_array_equal(data["train"][0], ref["train"][0])
    np.testing.assert_array_equal(data["test"][1], ref["test"][1])


def test_load_fashion_mnist_missing_without_download(tmp_path):
    with pytest.raises(DataError) as e:
        load_fashion_mnist(tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path / "fashion-mnist") in msg and "edgefashion data download fashion-mnist" in msg


def test_load_fashion_mnist_checks_counts_and_labels(tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()

    def write(n_train_images=60000, n_train_labels=60000, max_label=9):
        rng = np.random.default_rng(0)
        for name, arr in {
            "train-images-idx3-ubyte": np.zeros((n_train_images, 28, 28), np.uint8),
            "train-labels-idx1-ubyte": rng.integers(0, max_label + 1, n_train_labels).astype(np.uint8),
            "t10k-images-idx3-ubyte": np.zeros((10000, 28, 28), np.uint8),
            "t10k-labels-idx1-ubyte": rng.integers(0, 10, 10000).astype(np.uint8),
        }.items():
            (folder / name).write_bytes(idx_bytes(arr))

    write()
    check_fashion_mnist(load_fashion_mnist(tmp_path, download=False))
    write(n_train_images=59999)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: expected 60000 train images, found 59999"):
        load_fashion_mnist(tmp_path, download=False)
    write(n_train_labels=100)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: expected 60000 train labels, found 100"):
        load_fashion_mnist(tmp_path, download=False)
    write(max_label=12)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: labels must be 0\.\.9"):
        load_fashion_mnist(tmp_path, download=False)


# --- clothing-small ------------------------------------------------------------------------------------------

def make_clothing_zip(path: Path, tmp: Path) -> Path:
    tree = tmp / "zipsrc" / "clothing-dataset-small-master"
    for split, n in (("train", 4), ("validation", 2), ("test", 2)):
        make_class_tree(tree / split, {"a": n, "b": n})
    (tree / "README.md").write_text("clothing-small\n")
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted(tree.parent.rglob("*")):
            zf.write(p, p.relative_to(tree.parent).as_posix())
    return path


def test_ensure_clothing_small_downloads_and_extracts(http_dir, tmp_path, capsys):
    served, base = http_dir
    make_clothing_zip(served / "master.zip", tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="edgefashion data download clothing-small"):
        ensure_clothing_small(root, download=False)
    path = ensure_clothing_small(root, url=f"{base}/master.zip")
    assert path == root / "clothing-small"
    assert leftovers(root) == ["clothing-small"]  # no zip, no temp folder
    err = capsys.readouterr().err
    assert f"downloading {base}/master.zip" in err
    assert hashlib.sha256((served / "master.zip").read_bytes()).hexdigest() in err
    ds = load_folder_dataset(path)
    assert ds.labels == ("a", "b")
    assert {k: len(v[0]) for k, v in ds.splits.items()} == {"train": 8, "val": 4, "test": 4}
    # Already there: returned without a download.
    assert ensure_clothing_small(root, download=False) == path
    assert resolve_dataset("clothing-small", root, download=False) == ("folder", path)


def test_ensure_clothing_small_rejects_unsafe_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("top/train/a/x.jpg", b"x")
        zf.writestr("../escape.txt", b"gotcha")
    root = tmp_path / "root"
    with pytest.raises(DataError, match="unsafe path"):
        ensure_clothing_small(root, url=bad.as_uri())
    assert leftovers(root) == [] and not (tmp_path / "escape.txt").exists()


def test_ensure_clothing_small_not_a_zip(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="not a valid zip"):
        ensure_clothing_small(tmp_path / "root", url=bad.as_uri())
    assert leftovers(tmp_path / "root") == []


def test_ensure_clothing_small_archive_without_train(tmp_path):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("repo-master/README.md", "not the data set")
    root = tmp_path / "root"
    with pytest.raises(DataError, match="no train/ folder"):
        ensure_clothing_small(root, url=other.as_uri())
    assert leftovers(root) == []
    (root / "clothing-small").mkdir()
    (root / "clothing-small" / "junk").write_text("x")
    with pytest.raises(DataError, match="exists but has no train/ folder"):
        ensure_clothing_small(root, url=other.as_uri())


def test_clothing_small_url():
    assert CLOTHING_SMALL_URL.startswith("https://github.com/alexeygrigorev/clothing-dataset-small/")


# --- class folders -------------------------------------------------------------------------------------------

def test_real_clothing_small(shared_data):
    ds = load_folder_dataset(shared_data / "clothing-small")
    assert isinstance(ds, FolderDataset)
    assert ds.labels == ("dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt",
                         "t-shirt")
    assert {k: len(v[0]) for k, v in ds.splits.items()} == {"train": 3068, "val": 341, "test": 372}
    for paths, y in ds.splits.values():
        assert y.dtype == np.int64 and len(y) == len(paths)
        assert all(p.parent.name == ds.labels[i] for p, i in zip(paths, y))
    assert set(find_splits(shared_data / "clothing-small")) == {"train", "val", "test"}
    # A few real photos decode, in threads.
    paths = ds.splits["test"][0][::60]
    x, kept = load_images(paths, lambda bgr: cv2.resize(bgr, (32, 32)), workers=2)
    assert x.shape == (len(paths), 32, 32, 3) and list(kept) == list(range(len(paths)))


def split_sets(ds: FolderDataset) -> dict:
    return {k: [str(p) for p in v[0]] for k, v in ds.splits.items()}


def test_unsplit_folder_is_split_stratified_and_deterministic(tmp_path):
    counts = {"a": 20, "b": 11, "c": 5}
    root = make_class_tree(tmp_path / "ds", counts)
    (root / "notes.txt").write_text("stray file at the top: ignored")
    ds = load_folder_dataset(root, seed=3)
    assert ds.labels == ("a", "b", "c")
    sets = split_sets(ds)
    all_files = sorted(str(p) for p in root.rglob("*.jpg"))
    assert sorted(sum(sets.values(), [])) == all_files  # union = all, and no duplicates
    assert len(set(sets["train"]) | set(sets["val"]) | set(sets["test"])) == len(all_files)
    for paths, y in ds.splits.values():
        assert set(y.tolist()) == {0, 1, 2}  # every class in every split
    # test: round(0.2 * n) per class; val: round(0.2 * rest)
    assert np.bincount(ds.splits["test"][1]).tolist() == [4, 2, 1]
    assert np.bincount(ds.splits["val"][1]).tolist() == [3, 2, 1]
    assert split_sets(load_folder_dataset(root, seed=3)) == sets
    assert split_sets(load_folder_dataset(root, seed=4)) != sets
    ds2 = load_folder_dataset(root, seed=3, val_fraction=0.5, test_fraction=0.1)
    assert np.bincount(ds2.splits["test"][1]).tolist() == [2, 1, 1]


def test_stratified_split():
    y = np.repeat(np.arange(4), [10, 3, 2, 1])
    keep, split = stratified_split(y, 0.25, seed=0)
    assert np.bincount(y[split], minlength=4).tolist() == [3, 1, 1, 0]  # at least 1 if n >= 2
    assert sorted(np.concatenate([keep, split]).tolist()) == list(range(len(y)))
    assert np.array_equal(split, stratified_split(y, 0.25, seed=0)[1])
    assert not np.array_equal(stratified_split(y, 0.5, seed=0)[1], stratified_split(y, 0.5, seed=1)[1])
    assert len(stratified_split(y, 0.0, seed=0)[1]) == 0
    # Pinned: a change here (our algorithm or numpy's PCG64 stream) changes every run's split.
    assert stratified_split(np.zeros(10, int), 0.3, seed=0)[1].tolist() == [2, 4, 6]


def test_split_spec_records_and_reads_back():
    from edgefashion.meta import MetaError, photo_meta
    spec = SplitSpec(val_fraction=0.3, test_fraction=0.1, seed=7)
    assert SplitSpec.from_dict(spec.to_dict()) == spec
    # Files and checkpoints from before the parameters were recorded read as the defaults they were made with.
    assert SplitSpec.from_dict(None) == SplitSpec.from_dict({}) == SplitSpec(0.2, 0.2, 0)
    assert SplitSpec.from_dict({"seed": 1, "newer_key": "x"}) == SplitSpec(seed=1)
    meta = photo_meta("m", ["a", "b"], 32)
    assert SplitSpec.from_meta(meta) == SplitSpec()
    assert SplitSpec.from_meta(meta.replace(split=spec.to_dict())) == spec
    assert ModelMeta.from_json(meta.replace(split=spec.to_dict()).to_json()).split == spec.to_dict()
    for bad in ({"val_fraction": 1.5}, {"seed": -1}, {"seed": True}):
        with pytest.raises(ValueError):
            SplitSpec.from_dict(bad)
        with pytest.raises(MetaError, match="split"):
            meta.replace(split=bad)


def test_carve_takes_test_first_then_val_from_the_rest():
    y = np.repeat(np.arange(3), [20, 11, 5])
    spec = SplitSpec(val_fraction=0.25, test_fraction=0.2, seed=3)
    idx = carve(y, spec, ("test", "val"))
    keep, test = stratified_split(y, 0.2, 3)
    keep2, val = stratified_split(y[keep], 0.25, 3)
    assert idx["test"].tolist() == test.tolist() and idx["val"].tolist() == keep[val].tolist()
    assert idx["train"].tolist() == keep[keep2].tolist()
    # Only what the data set does not ship is carved: with a shipped test split, val comes from all of train.
    only_val = carve(y, spec, ("val",))
    assert set(only_val) == {"train", "val"} and only_val["val"].tolist() == stratified_split(y, 0.25, 3)[1].tolist()
    with pytest.raises(ValueError, match="carved"):
        carve(y, spec, ("train",))


def test_load_splits_is_the_same_everywhere(shared_data, tmp_path):
    root = make_class_tree(tmp_path / "ds", {"a": 12, "b": 9})
    spec = SplitSpec(val_fraction=0.3, seed=1)
    sd = load_splits("folder", root, spec)
    assert split_sets(sd) == split_sets(load_folder_dataset(root, spec)) == \
        split_sets(load_folder_dataset(root, val_fraction=0.3, seed=1))
    assert split_sets(sd) != split_sets(load_folder_dataset(root))
    assert sorted(sd.part("all")[0]) == sorted(root.rglob("*.jpg"))
    fm = load_splits("fashion-mnist", shared_data / "fashion-mnist", SplitSpec(seed=1))
    raw = load_fashion_mnist(shared_data, download=False)
    keep, val = stratified_split(raw["train"][1], 0.2, 1)
    assert np.array_equal(fm.part("val")[0], raw["train"][0][val])
    assert np.array_equal(fm.part("train")[1], raw["train"][1][keep])
    assert fm.part("test")[0] is raw["test"][0] or np.array_equal(fm.part("test")[0], raw["test"][0])
    # all: the data set's own order (train files, then test files), whatever the split parameters
    assert np.array_equal(fm.part("all")[1], np.concatenate([raw["train"][1], raw["test"][1]]))
    sub = stratified_subset(fm.part("test")[1], 100, 0)
    assert len(sub) == 100 and np.bincount(fm.part("test")[1][sub]).tolist() == [10] * 10


def test_shipped_train_and_test_without_val(tmp_path):
    root = tmp_path / "ds"
    make_class_tree(root / "train", {"x": 10, "y": 10})
    make_class_tree(root / "test", {"x": 2, "y": 2})
    ds = load_folder_dataset(root, val_fraction=0.3)
    assert {k: len(v[0]) for k, v in ds.splits.items()} == {"train": 14, "val": 6, "test": 4}
    assert all("/train/" in p for p in split_sets(ds)["val"])
    make_class_tree(root / "val", {"x": 1, "y": 1})
    assert len(load_folder_dataset(root).splits["val"][0]) == 2  # shipped val/ is used as it is


def test_split_with_other_classes_is_an_error(tmp_path):
    root = tmp_path / "ds"
    make_class_tree(root / "train", {"x": 2, "y": 2})
    make_class_tree(root / "validation", {"x": 1, "z": 1})
    with pytest.raises(DataError) as e:
        load_folder_dataset(root)
    msg = str(e.value)
    assert str(root / "validation") in msg and "'y'" in msg and "'z'" in msg


def test_empty_class_folder_and_no_classes(tmp_path):
    root = make_class_tree(tmp_path / "ds", {"a": 2, "b": 2})
    (root / "c").mkdir()
    (root / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"{root / 'c'}: empty class folder"):
        load_folder_dataset(root)
    with pytest.raises(DataError, match="no class folders"):
        list_class_folder(tmp_path / "ds" / "a")
    with pytest.raises(DataError, match="no such folder"):
        load_folder_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="only one class folder"):
        load_folder_dataset(make_class_tree(tmp_path / "one", {"solo": 3}))


def test_class_listing_filters_files(tmp_path):
    root = make_class_tree(tmp_path / "ds", {"a": 2, "b": 1})
    write_jpg(root / "b" / "UPPER.JPG", 99)
    write_jpg(root / "b" / "shot.Jpeg", 98)
    (root / "b" / "labels.csv").write_text("x")
    write_jpg(root / "b" / ".hidden.jpg", 97)
    write_jpg(root / ".cache" / "x.jpg", 96)
    (root / "__MACOSX").mkdir()
    classes = list_class_folder(root)
    assert list(classes) == ["a", "b"]
    assert [p.name for p in classes["b"]] == ["UPPER.JPG", "b_000.jpg", "shot.Jpeg"]


def test_nested_single_top_folder(tmp_path):
    # Carousell "Clothes Dataset" style: an archive's single top folder holding the class folders.
    make_class_tree(tmp_path / "clothes" / "Clothes_Dataset", {"Blazer": 6, "Celana_Panjang": 6, "Kaos": 6})
    ds = load_folder_dataset(tmp_path / "clothes")
    assert ds.labels == ("Blazer", "Celana_Panjang", "Kaos")
    assert ds.root == tmp_path / "clothes" / "Clothes_Dataset"
    assert sum(len(v[0]) for v in ds.splits.values()) == 18
    # ... and a single top folder holding split folders.
    make_class_tree(tmp_path / "wrapped" / "top" / "train", {"a": 3, "b": 3})
    make_class_tree(tmp_path / "wrapped" / "top" / "test", {"a": 1, "b": 1})
    assert len(load_folder_dataset(tmp_path / "wrapped").splits["test"][0]) == 2


def test_read_image_formats_and_non_ascii_path(tmp_path):
    grey = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    folder = tmp_path / "vêtements été"
    folder.mkdir()
    ok, buf = cv2.imencode(".png", grey)
    (folder / "gris.png").write_bytes(buf.tobytes())
    img = read_image(folder / "gris.png")
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8 and np.array_equal(img[:, :, 1], grey)
    bgra = np.dstack([np.full((5, 6, 3), 7, np.uint8), np.full((5, 6), 128, np.uint8)])
    ok, buf = cv2.imencode(".png", bgra)
    (folder / "alpha.png").write_bytes(buf.tobytes())
    assert read_image(folder / "alpha.png").shape == (5, 6, 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    with pytest.raises(DataError, match="broken.jpg"):
        read_image(folder / "broken.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg: empty file"):
        read_image(folder / "empty.jpg")


def test_load_images_skips_unreadable_with_one_warning(tmp_path):
    root = make_class_tree(tmp_path / "ds", {"a": 3, "b": 3})
    (root / "a" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    (root / "b" / "x.png").write_text("not an image, just text")
    ds = load_folder_dataset(root, val_fraction=0.0, test_fraction=0.0)
    paths, y = ds.splits["train"]
    assert len(paths) == 8
    with pytest.warns(UserWarning) as record:
        x, kept = load_images(paths, lambda bgr: cv2.resize(bgr, (8, 8)))
    msgs = [str(w.message) for w in record]
    assert len(msgs) == 1 and "skipped 2 unreadable images" in msgs[0]
    assert "corrupt.jpg" in msgs[0] and "x.png" in msgs[0] and str(root) in msgs[0]
    assert x.shape == (6, 8, 8, 3) and x.dtype == np.uint8
    assert [paths[i].name for i in kept] == [p.name for p in paths if p.name not in ("corrupt.jpg", "x.png")]
    assert np.array_equal(x[0], cv2.resize(read_image(paths[kept[0]]), (8, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when nothing is skipped
        x2, kept2 = load_images([paths[i] for i in kept], lambda bgr: cv2.resize(bgr, (8, 8)), workers=1)
    assert np.array_equal(x2, x) and kept2.tolist() == list(range(6))
    with pytest.raises(DataError, match="none of the 2 images could be read"):
        load_images([root / "a" / "corrupt.jpg", root / "b" / "x.png"], lambda bgr: bgr)
    # Each image cut to another height: a prepare() whose shapes differ (a random height let them match, 1 in 16)
    heights = iter(range(1, 4))
    with pytest.raises(ValueError, match="prepare"):
        load_images(paths[:3], lambda bgr: bgr[: next(heights)], workers=1)

