"""Verified download of the datasets' canonical files (no torch: the workflow reads
:data:`DOWNLOADS` when it starts).

Every file is fetched to a ``.part`` file and renamed into place only once its SHA-256 matches,
so a partial or corrupt download never takes the place of a good file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from vaeinf.errors import DataError
from vaeinf.names import DATASETS

#: A packed binarized_mnist.npz to use in place of the download (tests, benchmarks, clusters
#: with the file at hand).
BINARIZED_MNIST_NPZ_ENV = "VAEINF_BINARIZED_MNIST_NPZ"


@dataclass(frozen=True)
class RemoteFile:
    """A canonical file: where it goes under ``data_dir``, its URLs (mirrors), size and SHA-256."""

    relpath: str
    urls: tuple[str, ...]
    size: int | None
    sha256: str | None


_LAROCHELLE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
_MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist",
    "https://ossci-datasets.s3.amazonaws.com/mnist",
)

# Sizes and SHA-256 sums from tensorflow/datasets, tensorflow_datasets/url_checksums/
# binarized_mnist.txt and mnist.txt. Only the mnist images are needed (no labels).
DOWNLOADS: dict[str, tuple[RemoteFile, ...]] = {
    "digits": (),  # bundled with scikit-learn
    "binarized_mnist": (
        RemoteFile(
            "binarized_mnist/binarized_mnist_train.amat",
            (f"{_LAROCHELLE}/binarized_mnist_train.amat",),
            78400000,
            "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
        ),
        RemoteFile(
            "binarized_mnist/binarized_mnist_valid.amat",
            (f"{_LAROCHELLE}/binarized_mnist_valid.amat",),
            15680000,
            "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
        ),
        RemoteFile(
            "binarized_mnist/binarized_mnist_test.amat",
            (f"{_LAROCHELLE}/binarized_mnist_test.amat",),
            15680000,
            "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
        ),
    ),
    "mnist": (
        RemoteFile(
            "mnist/train-images-idx3-ubyte.gz",
            tuple(f"{m}/train-images-idx3-ubyte.gz" for m in _MNIST_MIRRORS),
            9912422,
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        RemoteFile(
            "mnist/t10k-images-idx3-ubyte.gz",
            tuple(f"{m}/t10k-images-idx3-ubyte.gz" for m in _MNIST_MIRRORS),
            1648877,
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
    ),
}


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path) -> None:
    """Copy the body at ``url`` into ``dest`` (the one network call; tests replace it)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f)


def _download_one(remote: RemoteFile, dest: Path) -> None:
    """Fetch ``remote`` to ``dest.part``, verify its SHA-256, then rename it to ``dest``."""
    tmp = dest.with_name(dest.name + ".part")
    errors = []
    for url in remote.urls:
        try:
            _fetch(url, tmp)
            break
        except (urllib.error.URLError, OSError) as err:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {err}")
    else:
        raise DataError(f"could not download {dest.name}: " + "; ".join(errors))
    got = sha256_file(tmp)
    if got != remote.sha256:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"checksum mismatch for {dest.name}: expected sha256 {remote.sha256}, got {got}; "
            "the download is corrupt or the mirror changed, nothing was kept"
        )
    os.replace(tmp, dest)


def download(name: str, data_dir: str | Path) -> list[Path]:
    """Fetch the canonical files of dataset ``name`` into ``data_dir``, verifying SHA-256 sums.

    Each file is written to a ``.part`` file and renamed only once its hash matches, so a
    partial or corrupt download never takes the place of a good file. Files already present with
    the right hash are kept. Returns the paths of all the dataset's files (empty for ``digits``).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; allowed: {', '.join(sorted(DATASETS))}")
    data_dir = Path(data_dir)
    paths = []
    for remote in DOWNLOADS[name]:
        dest = data_dir / remote.relpath
        if remote.sha256 is None:
            raise DataError(
                f"no known sha256 for {dest.name}; refusing to download it unverified "
                f"(place the file at {dest} yourself)"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not (dest.is_file() and sha256_file(dest) == remote.sha256):
            _download_one(remote, dest)
        paths.append(dest)
    return paths
