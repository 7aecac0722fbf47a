"""Tests for vaeinf.core.data: loaders, binarization, file formats and verified download."""

from __future__ import annotations

import gzip
import hashlib
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from vaeinf.core import data, downloads
from vaeinf.core.data import DataError, Dataset, load_dataset

SHARED_NPZ = Path(__file__).resolve().parents[2] / "shared/data/binarized_mnist.npz"


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_shapes_and_binary_splits():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.name == "digits"
    assert ds.dim == 64
    assert ds.train.shape == (1397, 64)
    assert ds.valid.shape == (200, 64)
    assert ds.test.shape == (200, 64)
    for x in (ds.train, ds.valid, ds.test):
        assert x.dtype == torch.float32
    assert is_binary(ds.valid) and is_binary(ds.test)
    assert not ds.dynamic and is_binary(ds.train)  # default is static
    assert ds.train_mean().shape == (64,)


def test_digits_read_from_the_csv_equal_load_digits(monkeypatch):
    from sklearn.datasets import load_digits

    np.testing.assert_array_equal(data.digits_pixels(), load_digits().data)
    # Where the CSV is not found, load_digits itself is used.
    monkeypatch.setattr(data.importlib.util, "find_spec", lambda name: None)
    np.testing.assert_array_equal(data.digits_pixels(), load_digits().data)


def test_digits_is_deterministic():
    a = load_dataset("digits")
    b = load_dataset("digits")
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))


def test_digits_split_independent_of_binarization():
    static = load_dataset("digits", binarization="static")
    dynamic = load_dataset("digits", binarization="dynamic")
    # Same fixed valid/test in both modes.
    assert torch.equal(static.valid, dynamic.valid)
    assert torch.equal(static.test, dynamic.test)
    # Static train is one Bernoulli sample of the dynamic train intensities.
    assert not is_binary(dynamic.train)
    assert dynamic.train.min() >= 0 and dynamic.train.max() <= 1
    assert bool(((static.train == 1) <= (dynamic.train > 0)).all())


def test_digits_static_binarize_is_identity():
    ds = load_dataset("digits", binarization="static")
    x = ds.train[:32]
    out = ds.binarize(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, x)


def test_digits_dynamic_binarize_samples():
    ds = load_dataset("digits", binarization="dynamic")
    assert ds.dynamic
    x = ds.train[:64]
    a = ds.binarize(x, torch.Generator().manual_seed(1))
    a2 = ds.binarize(x, torch.Generator().manual_seed(1))
    b = ds.binarize(x, torch.Generator().manual_seed(2))
    assert is_binary(a) and a.shape == x.shape
    assert torch.equal(a, a2)  # same generator seed, same sample
    assert not torch.equal(a, b)  # different seed, different sample
    # Pixels at exactly 0 or 1 intensity stay put.
    assert bool((a[x == 0] == 0).all()) and bool((a[x == 1] == 1).all())


def test_digits_train_mean_matches_intensities():
    ds = load_dataset("digits", binarization="dynamic")
    assert torch.allclose(ds.train_mean(), ds.train.mean(0))


# --------------------------------------------------------------------------------------------
# binarized_mnist
# --------------------------------------------------------------------------------------------


def random_binary(n: int, seed: int, dim: int = 784) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, dim)) < 0.13).astype(np.uint8)


def write_amat(path: Path, x: np.ndarray, trailing: str = "", newline: str = "\n") -> None:
    rows = [" ".join(str(v) for v in row) + trailing for row in x]
    path.write_text(newline.join(rows) + newline)


@pytest.fixture
def small_bmnist():
    return {"train": random_binary(7, 0), "valid": random_binary(3, 1), "test": random_binary(4, 2)}


@pytest.fixture(autouse=True)
def no_env_npz(monkeypatch):
    monkeypatch.delenv(data.BINARIZED_MNIST_NPZ_ENV, raising=False)


def check_bmnist(ds: Dataset, arrays: dict[str, np.ndarray]) -> None:
    assert ds.name == "binarized_mnist" and not ds.dynamic and ds.dim == 784
    for split, x in arrays.items():
        t = getattr(ds, split)
        assert t.dtype == torch.float32
        assert np.array_equal(t.numpy(), x.astype(np.float32))


def test_binarized_mnist_from_amat(tmp_path, small_bmnist):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    for split, x in small_bmnist.items():
        write_amat(folder / f"binarized_mnist_{split}.amat", x)
    check_bmnist(load_dataset("binarized_mnist", data_dir=tmp_path), small_bmnist)


@pytest.mark.parametrize(("trailing", "newline"), [(" ", "\n"), ("", "\r\n")])
def test_read_amat_tolerates_whitespace_variants(tmp_path, trailing, newline):
    x = random_binary(5, 3)
    path = tmp_path / "x.amat"
    write_amat(path, x, trailing=trailing, newline=newline)
    assert np.array_equal(data.read_amat(path), x)


def test_read_amat_rejects_bad_content(tmp_path):
    x = random_binary(3, 4)
    path = tmp_path / "short.amat"
    write_amat(path, x)
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], text[1][:-2], text[2]]) + "\n")  # row 2 is one short
    with pytest.raises(DataError, match="row 2 has 783 values"):
        data.read_amat(path)
    path.write_text("0 1 0.5\n")
    with pytest.raises(DataError, match="unexpected character"):
        data.read_amat(path, dim=3)
    path.write_text("0 11\n")
    with pytest.raises(DataError, match="single 0/1 digits"):
        data.read_amat(path, dim=2)


@pytest.mark.parametrize("where", ["top", "folder", "env"])
def test_binarized_mnist_from_packed_npz(tmp_path, small_bmnist, monkeypatch, where):
    packed = {k: np.packbits(v, axis=1) for k, v in small_bmnist.items()}  # (N, 98)
    if where == "top":
        np.savez(tmp_path / "binarized_mnist.npz", **packed)
        data_dir = tmp_path
    elif where == "folder":
        (tmp_path / "binarized_mnist").mkdir()
        np.savez(tmp_path / "binarized_mnist" / "binarized_mnist.npz", **packed)
        data_dir = tmp_path
    else:
        np.savez(tmp_path / "anywhere.npz", **packed)
        monkeypatch.setenv(data.BINARIZED_MNIST_NPZ_ENV, str(tmp_path / "anywhere.npz"))
        data_dir = tmp_path / "empty"
    check_bmnist(load_dataset("binarized_mnist", data_dir=data_dir), small_bmnist)


def test_binarized_mnist_bad_npz(tmp_path, monkeypatch):
    np.savez(tmp_path / "binarized_mnist.npz", train=np.zeros((2, 98), np.uint8))
    with pytest.raises(DataError, match="missing array.*valid, test"):
        load_dataset("binarized_mnist", data_dir=tmp_path)
    monkeypatch.setenv(data.BINARIZED_MNIST_NPZ_ENV, str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="nope.npz"):
        load_dataset("binarized_mnist", data_dir=tmp_path)


def test_binarized_mnist_missing_files_message(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "binarized_mnist") in msg
    assert str(tmp_path / "binarized_mnist.npz") in msg
    assert "vaeinf download binarized_mnist" in msg
    assert "\n" not in msg


def test_binarized_mnist_real_shared_npz(monkeypatch):
    if not SHARED_NPZ.is_file():
        pytest.skip(f"shared Larochelle binarized MNIST not found at {SHARED_NPZ}")
    ds = load_dataset("binarized_mnist", data_dir=SHARED_NPZ.parent)
    assert ds.train.shape == (50000, 784)
    assert ds.valid.shape == (10000, 784)
    assert ds.test.shape == (10000, 784)
    assert is_binary(ds.test)
    assert abs(ds.train.mean().item() - 0.1306) < 5e-4


# --------------------------------------------------------------------------------------------
# mnist (IDX)
# --------------------------------------------------------------------------------------------


def idx_bytes(x: np.ndarray, code: int = 0x08) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, x.ndim) + struct.pack(f">{x.ndim}I", *x.shape)
    return header + x.tobytes()


def write_mnist(data_dir: Path, n_train: int = 450, n_test: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
    }
    (data_dir / "mnist").mkdir(parents=True)
    for stem, x in images.items():
        (data_dir / "mnist" / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(x)))
    return images


def test_read_idx_gz_and_raw(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(x))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(x)))
    assert np.array_equal(data.read_idx(tmp_path / "a"), x)
    assert np.array_equal(data.read_idx(tmp_path / "a.gz"), x)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    assert np.array_equal(data.read_idx(tmp_path / "l"), labels)


def test_read_idx_rejects_corrupt(tmp_path):
    x = np.zeros((2, 28, 28), np.uint8)
    raw = bytearray(idx_bytes(x))
    raw[0] = 0x12  # corrupt magic
    (tmp_path / "bad.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="bad.gz: bad IDX magic number 12000803"):
        data.read_idx(tmp_path / "bad.gz")
    (tmp_path / "short").write_bytes(idx_bytes(x)[:-5])
    with pytest.raises(DataError, match="IDX body"):
        data.read_idx(tmp_path / "short")


def test_mnist_split_and_dynamic_default(tmp_path):
    images = write_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.name == "mnist" and ds.dynamic  # Burda et al. default
    assert ds.dim == 784
    assert ds.train.shape == (50, 784)  # 450 - 400 held out
    assert ds.valid.shape == (400, 784)
    assert ds.test.shape == (30, 784)
    train_full = images["train-images-idx3-ubyte"].reshape(450, 784) / 255.0
    np.testing.assert_allclose(ds.train.numpy(), train_full[:50], rtol=1e-6)
    assert is_binary(ds.valid) and is_binary(ds.test)
    # Valid is a Bernoulli sample of the LAST 400 training images: ones only where intensity > 0.
    assert bool(((ds.valid == 1) <= torch.as_tensor(train_full[50:] > 0)).all())


def test_mnist_binarization(tmp_path):
    write_mnist(tmp_path)
    ds = load_dataset("mnist", data_dir=tmp_path, binarization="dynamic")
    x = ds.train[:20]
    a = ds.binarize(x, torch.Generator().manual_seed(0))
    b = ds.binarize(x, torch.Generator().manual_seed(1))
    assert is_binary(a) and is_binary(b) and not torch.equal(a, b)
    # Valid/test are fixed: the same on reload and in static mode.
    again = load_dataset("mnist", data_dir=tmp_path, binarization="dynamic")
    static = load_dataset("mnist", data_dir=tmp_path, binarization="static")
    for other in (again, static):
        assert torch.equal(ds.valid, other.valid) and torch.equal(ds.test, other.test)
    assert not static.dynamic and is_binary(static.train)
    assert torch.equal(static.binarize(static.train), static.train)


def test_mnist_missing_files_message(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") in msg
    assert "vaeinf download mnist" in msg


def test_mnist_rejects_labels_file_as_images(tmp_path):
    (tmp_path / "mnist").mkdir()
    labels = np.zeros(500, np.uint8)
    (tmp_path / "mnist" / "train-images-idx3-ubyte").write_bytes(idx_bytes(labels))
    with pytest.raises(DataError, match="expected"):
        load_dataset("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


def test_unknown_dataset():
    with pytest.raises(DataError, match=r"^unknown dataset 'foo'; allowed: binarized_mnist, "):
        load_dataset("foo")
    assert isinstance(DataError("x"), ValueError)


def test_unknown_binarization():
    with pytest.raises(DataError, match="unknown binarization 'half'; allowed: dynamic, static"):
        load_dataset("digits", binarization="half")


def test_static_only_dataset_rejects_dynamic(tmp_path):
    with pytest.raises(DataError, match="already binary; binarization must be 'static'"):
        load_dataset("binarized_mnist", data_dir=tmp_path, binarization="dynamic")


def test_registry():
    assert set(data.LOADERS) == set(data.DATASETS) == {"digits", "binarized_mnist", "mnist"}
    assert data.BINARIZATIONS == ("dynamic", "static")


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------

PAYLOAD = b"canonical bytes\n"


@pytest.fixture
def fake_remote(monkeypatch):
    """One fake file in the download table and a _fetch that writes PAYLOAD; records calls."""
    remote = data.RemoteFile(
        "fake/file.bin",
        ("http://mirror-a/file.bin", "http://mirror-b/file.bin"),
        len(PAYLOAD),
        hashlib.sha256(PAYLOAD).hexdigest(),
    )
    monkeypatch.setitem(data.DOWNLOADS, "digits", (remote,))
    calls = []

    def fetch(url, dest):
        calls.append((url, Path(dest)))
        Path(dest).write_bytes(PAYLOAD)

    monkeypatch.setattr(downloads, "_fetch", fetch)
    return remote, calls


def test_download_verified(tmp_path, fake_remote):
    remote, calls = fake_remote
    paths = data.download("digits", tmp_path)
    dest = tmp_path / "fake" / "file.bin"
    assert paths == [dest]
    assert dest.read_bytes() == PAYLOAD
    assert calls == [("http://mirror-a/file.bin", tmp_path / "fake" / "file.bin.part")]
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left
    data.download("digits", tmp_path)  # already present and verified: no new fetch
    assert len(calls) == 1


def test_download_checksum_mismatch(tmp_path, fake_remote, monkeypatch):
    remote, _ = fake_remote
    monkeypatch.setattr(downloads, "_fetch", lambda url, dest: Path(dest).write_bytes(b"tampered"))
    with pytest.raises(DataError) as err:
        data.download("digits", tmp_path)
    msg = str(err.value)
    assert "file.bin" in msg
    assert remote.sha256 in msg
    assert hashlib.sha256(b"tampered").hexdigest() in msg
    assert list((tmp_path / "fake").iterdir()) == []  # tmp deleted, nothing renamed into place


def test_download_falls_back_to_mirror(tmp_path, fake_remote, monkeypatch):
    tried = []

    def fetch(url, dest):
        tried.append(url)
        if "mirror-a" in url:
            raise urllib.error.URLError("unreachable")
        Path(dest).write_bytes(PAYLOAD)

    monkeypatch.setattr(downloads, "_fetch", fetch)
    data.download("digits", tmp_path)
    assert tried == ["http://mirror-a/file.bin", "http://mirror-b/file.bin"]
    assert (tmp_path / "fake" / "file.bin").read_bytes() == PAYLOAD


def test_download_all_mirrors_fail(tmp_path, fake_remote, monkeypatch):
    def fetch(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(downloads, "_fetch", fetch)
    with pytest.raises(DataError, match="could not download file.bin.*no network"):
        data.download("digits", tmp_path)


def test_download_refuses_unknown_hash(tmp_path, monkeypatch):
    remote = data.RemoteFile("fake/x.bin", ("http://x",), None, None)
    monkeypatch.setitem(data.DOWNLOADS, "digits", (remote,))
    monkeypatch.setattr(downloads, "_fetch", lambda url, dest: pytest.fail("must not fetch"))
    with pytest.raises(DataError, match="no known sha256 for x.bin"):
        data.download("digits", tmp_path)


def test_download_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'foo'"):
        data.download("foo", tmp_path)


def test_download_table_is_complete():
    assert data.download.__module__ == "vaeinf.core.downloads"
    for name in ("binarized_mnist", "mnist"):
        remotes = data.DOWNLOADS[name]
        assert remotes
        for remote in remotes:
            assert remote.urls and remote.size and remote.size > 0
            assert remote.sha256 is not None and len(remote.sha256) == 64
            int(remote.sha256, 16)
    names = [Path(r.relpath).name for r in data.DOWNLOADS["binarized_mnist"]]
    assert names == [f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")]


def test_every_seed_of_a_run_sees_the_same_evaluation_data():
    """The run's seed never reaches the data: two seeds of one dataset share the validation and
    test sets (and the static training binarization), and the test fingerprint says so."""
    from vaeinf.config import RunConfig
    from vaeinf.core.train import prepare

    a, _, _ = prepare(RunConfig(dataset="digits", method="vae", seed=0))
    b, _, _ = prepare(RunConfig(dataset="digits", method="vae", seed=7))
    for split in ("train", "valid", "test"):
        torch.testing.assert_close(getattr(a, split), getattr(b, split), rtol=0, atol=0)
    assert Dataset.fingerprint(*a.subset("test", 50)) == Dataset.fingerprint(*b.subset("test", 50))
    assert Dataset.fingerprint(*a.subset("test", 50)) != Dataset.fingerprint(*a.subset("test", 49))


def test_subsets_are_fixed_random_nested_samples():
    ds = load_dataset("digits")
    x, idx = ds.subset("test", 50)
    x2, idx2 = ds.subset("test", 50)
    assert torch.equal(idx, idx2) and torch.equal(x, ds.test[idx])
    assert not torch.equal(idx, torch.arange(50))  # not the first 50 rows
    assert len(set(idx.tolist())) == 50 and idx.max() > 100  # spread over the split
    small, _ = ds.subset("test", 20)
    torch.testing.assert_close(small, x[:20])  # nested: the 20-sample opens the 50-sample
    everything, all_idx = ds.subset("test", None)
    assert sorted(all_idx.tolist()) == list(range(len(ds.test)))
    assert torch.equal(ds.subset("valid", 50)[1], ds.subset("valid", 50)[1])
    assert not torch.equal(ds.subset("valid", 50)[1], idx)  # each split its own sample
