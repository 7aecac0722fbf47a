"""Datasets for VAE density estimation: loading, binarization and verified download.

Three datasets are registered (names in :data:`vaeinf.names.DATASETS`, loaders in :data:`LOADERS`):

``digits``
    scikit-learn's bundled 8x8 digits (1797 images, D=64), scaled to [0, 1]. Needs no files, so it
    is the offline default for tests and smoke runs.
``binarized_mnist``
    The statically binarized MNIST of Larochelle & Murray (2011), "The Neural Autoregressive
    Distribution Estimator", AISTATS: 50000/10000/10000 images of 28x28 binary pixels (D=784).
    The data are already binary, so only ``binarization="static"`` is allowed.
``mnist``
    The canonical 60000/10000 grayscale MNIST IDX files, used with the protocol of Burda, Grosse &
    Salakhutdinov (2015), "Importance Weighted Autoencoders", Sec. 5: the training set is
    binarized dynamically (a fresh Bernoulli sample of the intensities every minibatch). The last
    400 training images are held out as a validation set; validation and test images are
    binarized stochastically once, with a fixed seed.

Every split is a float32 tensor of shape (N, D). ``valid`` and ``test`` are always binary. ``train``
holds intensities in [0, 1] when the dataset is dynamic and binary values otherwise; call
:meth:`Dataset.binarize` on each training minibatch.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vaeinf.core.downloads import (
    BINARIZED_MNIST_NPZ_ENV,
    DOWNLOADS,
    RemoteFile,
    download,
    sha256_file,
)
from vaeinf.errors import DataError
from vaeinf.names import DATASETS

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "LOADERS",
    "DOWNLOADS",
    "DataError",
    "Dataset",
    "RemoteFile",
    "download",
    "load_dataset",
    "read_amat",
    "read_idx",
    "sha256_file",
]

BINARIZATIONS = ("dynamic", "static")

MNIST_DIM = 28 * 28  # 784
MNIST_VALID_SIZE = 400  # last 400 training images held out as validation (mnist only)
DIGITS_SPLIT = (1397, 200, 200)  # train / valid / test sizes of the 1797 digits
DIGITS_PERMUTATION_SEED = 0  # constant: the digits split never depends on a run's seed

# Offsets that give each split its own generator stream for one-off Bernoulli binarization.
_SPLIT_STREAM = {"train": 0, "valid": 1, "test": 2}


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Train/valid/test splits of one dataset, each a float32 tensor of shape (N, D)."""

    name: str
    train: torch.Tensor  # (N_train, D): intensities in [0, 1] if dynamic, else binary {0, 1}
    valid: torch.Tensor  # (N_valid, D): binary {0, 1}, fixed
    test: torch.Tensor  # (N_test, D): binary {0, 1}, fixed
    dynamic: bool  # True: train is re-binarized by Bernoulli sampling every minibatch

    def __post_init__(self) -> None:
        for split in ("train", "valid", "test"):
            x = getattr(self, split)
            if x.dim() != 2 or x.shape[1] != self.train.shape[1]:
                raise DataError(
                    f"{self.name}: split '{split}' has shape {tuple(x.shape)}; "
                    f"expected (N, {self.train.shape[-1]})"
                )
            if len(x) == 0:
                raise DataError(f"{self.name}: split '{split}' holds no images")
            # Row-major, so that a slice of rows is a contiguous (B, D) batch. np.unpackbits
            # returns a column-major array; a batch sliced from it made Inductor transpose
            # every 8x8 block of the logits in the fused likelihood kernel (a sixth of the
            # compiled step at K = 50 in a profile).
            setattr(self, split, x.contiguous())

    @property
    def dim(self) -> int:
        """Number of pixels D."""
        return int(self.train.shape[1])

    def binarize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bernoulli sample of x when dynamic, x unchanged when static."""
        if not self.dynamic:
            return x
        return torch.bernoulli(x, generator=generator)

    def subset(self, split: str, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed random sample of ``n`` points of ``split`` (all of it, shuffled, when n is
        None or at least its size): (x (n, D), indices (n,)).

        The first n of one permutation seeded by the dataset's name and the split, so the
        sample depends on (dataset, split, n) only, is the same for every run, and smaller
        samples are nested in larger ones (so the first k of a sample are the k-sample). Never
        the first n rows: MNIST's test set is ordered
        by writer population, and its first 2000 images score about 20 nats better than the
        rest under the same model.
        """
        x = getattr(self, split)
        key = hashlib.sha256(f"{self.name}/{split}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
        idx = torch.randperm(len(x), generator=gen)[:n]  # all of them, in that order, for None
        return x[idx], idx

    @staticmethod
    def fingerprint(x: torch.Tensor, idx: torch.Tensor) -> str:
        """SHA-256 of a sample of points and their indices: equal fingerprints, equal data."""
        digest = hashlib.sha256(x.detach().cpu().float().contiguous().numpy().tobytes())
        digest.update(idx.cpu().long().numpy().tobytes())
        return digest.hexdigest()

    def train_mean(self) -> torch.Tensor:
        """(D,) mean pixel of the training set (intensities when dynamic), for the decoder bias."""
        return self.train.mean(dim=0)


def _bernoulli_once(x: torch.Tensor, split: str) -> torch.Tensor:
    """Fixed stochastic binarization of x (N, D): the same split always gives the same sample,
    whatever the run (the run's seed never reaches the data)."""
    generator = torch.Generator().manual_seed(_SPLIT_STREAM[split])
    return torch.bernoulli(x, generator=generator)


def _make_dataset(
    name: str,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    *,
    binarization: str,
) -> Dataset:
    """Build a Dataset from intensity arrays in [0, 1], binarizing stochastically as required."""
    train_t = torch.as_tensor(train, dtype=torch.float32)  # (N_train, D)
    valid_t = _bernoulli_once(torch.as_tensor(valid, dtype=torch.float32), "valid")
    test_t = _bernoulli_once(torch.as_tensor(test, dtype=torch.float32), "test")
    dynamic = binarization == "dynamic"
    if not dynamic:
        train_t = _bernoulli_once(train_t, "train")
    return Dataset(name=name, train=train_t, valid=valid_t, test=test_t, dynamic=dynamic)


# --------------------------------------------------------------------------------------------
# digits (scikit-learn, offline)
# --------------------------------------------------------------------------------------------


def digits_pixels() -> np.ndarray:
    """The (1797, 64) pixel counts 0..16 of scikit-learn's ``load_digits()``.

    Read straight from the CSV that scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``:
    64 pixels and the label per row) when it is where every release since 0.x puts it, because
    importing ``sklearn.datasets`` takes about 1.3 s (it loads SciPy), paid by every training
    and evaluation process; tested equal to ``load_digits().data``. Otherwise: ``load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float64)  # (1797, 65)
            if table.shape == (1797, 65):
                return table[:, :64]
    from sklearn.datasets import load_digits

    return load_digits().data


def _load_digits(data_dir: Path, binarization: str) -> Dataset:
    """scikit-learn's 8x8 digits, /16 to [0, 1], split 1397/200/200 by a constant permutation."""
    x = digits_pixels().astype(np.float32) / 16.0  # (1797, 64) in [0, 1]
    order = np.random.default_rng(DIGITS_PERMUTATION_SEED).permutation(len(x))
    x = x[order]
    n_train, n_valid, n_test = DIGITS_SPLIT
    if n_train + n_valid + n_test != len(x):
        raise DataError(f"digits: split {DIGITS_SPLIT} does not add up to {len(x)} images")
    train = x[:n_train]
    valid = x[n_train : n_train + n_valid]
    test = x[n_train + n_valid :]
    return _make_dataset("digits", train, valid, test, binarization=binarization)


# --------------------------------------------------------------------------------------------
# binarized_mnist (Larochelle & Murray 2011)
# --------------------------------------------------------------------------------------------

_AMAT_ALLOWED = np.zeros(256, dtype=bool)
_AMAT_ALLOWED[[ord("0"), ord("1"), ord(" "), ord("\t"), ord("\n"), ord("\r")]] = True


def read_amat(path: str | Path, dim: int = MNIST_DIM) -> np.ndarray:
    """Parse a binary ``.amat`` text file (one image per line, ``dim`` space-separated 0/1 values).

    This is the format of Larochelle & Murray's (2011) binarized MNIST. Returns (N, dim) uint8.
    Parsing works on the raw bytes (every value is a single '0' or '1' character), which is far
    faster than ``np.loadtxt`` on the 50000 x 784 training file.
    """
    path = Path(path)
    raw = path.read_bytes()
    buf = np.frombuffer(raw, dtype=np.uint8)  # (n_bytes,)
    if not _AMAT_ALLOWED[buf].all():
        bad = int(buf[~_AMAT_ALLOWED[buf]][0])
        raise DataError(
            f"{path}: unexpected character {chr(bad)!r} in .amat file; expected only 0/1 values "
            "separated by whitespace (re-download it with `vaeinf download binarized_mnist`)"
        )
    is_digit = (buf == ord("0")) | (buf == ord("1"))  # (n_bytes,)
    if (is_digit[:-1] & is_digit[1:]).any():
        raise DataError(f"{path}: values must be single 0/1 digits separated by whitespace")
    per_line = [line.count(b"0") + line.count(b"1") for line in raw.split(b"\n") if line.strip()]
    bad_rows = [i for i, n in enumerate(per_line) if n != dim]
    if not per_line or bad_rows:
        detail = (
            f"row {bad_rows[0] + 1} has {per_line[bad_rows[0]]} values" if bad_rows else "empty"
        )
        raise DataError(f"{path}: {detail}; expected {dim} values per line")
    digits = buf[is_digit] - ord("0")  # (N * dim,)
    n_rows = len(per_line)
    return digits.reshape(n_rows, dim)  # (N, dim) uint8 in {0, 1}


def _read_packed_npz(path: Path, dim: int = MNIST_DIM) -> dict[str, np.ndarray]:
    """Read train/valid/test arrays stored as ``np.packbits(X, axis=1)``; returns (N, dim) uint8."""
    try:
        npz = np.load(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: cannot read as .npz ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not an .npz archive; expected arrays train, valid, test")
    with npz:
        missing = [k for k in ("train", "valid", "test") if k not in npz.files]
        if missing:
            raise DataError(
                f"{path}: missing array(s) {', '.join(missing)}; expected train, valid, test "
                "each packed with np.packbits(X, axis=1)"
            )
        out = {}
        for split in ("train", "valid", "test"):
            try:
                packed = npz[split]  # (N, ceil(dim / 8)) uint8
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
                raise DataError(
                    f"{path}: array '{split}' cannot be read ({err}); the file is damaged: "
                    "replace it"
                ) from None
            if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] * 8 < dim:
                raise DataError(
                    f"{path}: array '{split}' has shape {packed.shape} and dtype "
                    f"{packed.dtype}; expected uint8 (N, {(dim + 7) // 8}) from np.packbits"
                )
            if len(packed) == 0:
                raise DataError(f"{path}: array '{split}' holds no images; replace the file")
            out[split] = np.unpackbits(packed, axis=1)[:, :dim]  # (N, dim)
    return out


def _load_binarized_mnist(data_dir: Path, binarization: str) -> Dataset:
    """Larochelle & Murray (2011) statically binarized MNIST, 50000/10000/10000 x 784.

    Looked for, in order: the file named by ``$VAEINF_BINARIZED_MNIST_NPZ``; the three canonical
    ``data_dir/binarized_mnist/binarized_mnist_{train,valid,test}.amat`` files; a packed-bits
    ``binarized_mnist.npz`` in ``data_dir`` or ``data_dir/binarized_mnist``.
    """
    folder = data_dir / "binarized_mnist"
    env = os.environ.get(BINARIZED_MNIST_NPZ_ENV)
    if env:
        env_path = Path(env)
        if not env_path.is_file():
            raise DataError(
                f"${BINARIZED_MNIST_NPZ_ENV} points at {env_path}, which does not exist"
            )
        arrays = _read_packed_npz(env_path)
    else:
        amats = {s: folder / f"binarized_mnist_{s}.amat" for s in ("train", "valid", "test")}
        npzs = [data_dir / "binarized_mnist.npz", folder / "binarized_mnist.npz"]
        if all(p.is_file() for p in amats.values()):
            arrays = {split: read_amat(p) for split, p in amats.items()}
        elif any(p.is_file() for p in npzs):
            arrays = _read_packed_npz(next(p for p in npzs if p.is_file()))
        else:
            raise DataError(
                f"binarized_mnist not found: looked for {folder}/binarized_mnist_"
                f"{{train,valid,test}}.amat, {npzs[0]} and {npzs[1]}; run "
                f"`vaeinf download binarized_mnist --data-dir {data_dir}`, or place a packed npz "
                f"there or set ${BINARIZED_MNIST_NPZ_ENV}"
            )
    splits = {k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items()}  # (N, 784)
    return Dataset(name="binarized_mnist", dynamic=False, **splits)


# --------------------------------------------------------------------------------------------
# mnist (grayscale IDX files, Burda et al. 2015 protocol)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzip-compressed or raw.

    Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32
    per dimension. Returns an array of that shape (e.g. (60000, 28, 28) uint8 for images).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(
                f"{path}: corrupt gzip data ({err}); delete it and re-download"
            ) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: bad IDX magic number {raw[:4].hex() or '(empty)'}; expected 0000 followed "
            "by a dtype code and ndim (e.g. 00000803 for images); delete it and re-download"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; delete it and re-download")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX body has {len(raw) - header} bytes; header shape {shape} needs "
            f"{expected}; delete it and re-download"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    """The gz or raw IDX file ``folder/stem[.gz]``, if either exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _load_mnist_images(data_dir: Path, stem: str) -> np.ndarray:
    """(N, 784) float32 intensities in [0, 1] from the IDX image file ``data_dir/mnist/stem``."""
    folder = data_dir / "mnist"
    path = _find_idx(folder, stem)
    if path is None:
        raise DataError(
            f"mnist not found: looked for {folder / stem}.gz (or uncompressed); run "
            f"`vaeinf download mnist --data-dir {data_dir}`"
        )
    images = read_idx(path)  # (N, 28, 28) uint8
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{path}: IDX array has shape {images.shape} and dtype {images.dtype}; expected "
            "(N, 28, 28) uint8 images (is this a labels file?)"
        )
    return images.reshape(len(images), MNIST_DIM).astype(np.float32) / 255.0  # (N, 784)


def _load_mnist(data_dir: Path, binarization: str) -> Dataset:
    """Grayscale MNIST, Burda et al. (2015) Sec. 5: dynamically binarized 60000/10000 split.

    The last 400 of the 60000 training images are held out as validation, leaving 59600 for
    training. Validation and test are binarized once with a fixed seed.
    """
    train_full = _load_mnist_images(data_dir, "train-images-idx3-ubyte")  # (60000, 784)
    test = _load_mnist_images(data_dir, "t10k-images-idx3-ubyte")  # (10000, 784)
    if len(train_full) <= MNIST_VALID_SIZE:
        raise DataError(
            f"mnist: training file has {len(train_full)} images; need more than "
            f"{MNIST_VALID_SIZE} to hold out a validation set"
        )
    train = train_full[:-MNIST_VALID_SIZE]  # (59600, 784)
    valid = train_full[-MNIST_VALID_SIZE:]  # (400, 784)
    return _make_dataset("mnist", train, valid, test, binarization=binarization)


# --------------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------------

#: name -> loader; the names are :data:`vaeinf.names.DATASETS` (a test checks they agree).
LOADERS: dict[str, Callable[[Path, str], Dataset]] = {
    "digits": _load_digits,
    "binarized_mnist": _load_binarized_mnist,
    "mnist": _load_mnist,
}

# Binarization used when load_dataset is called without one.
DEFAULT_BINARIZATION = {"digits": "static", "binarized_mnist": "static", "mnist": "dynamic"}

# Datasets whose files are already binary: dynamic binarization is meaningless for them.
STATIC_ONLY = frozenset({"binarized_mnist"})


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; allowed: {', '.join(sorted(DATASETS))}")


def load_dataset(
    name: str,
    *,
    data_dir: str | Path = "data",
    binarization: str | None = None,
) -> Dataset:
    """Load a registered dataset.

    Args:
        name: one of :data:`DATASETS` (``digits``, ``binarized_mnist``, ``mnist``).
        data_dir: folder holding the dataset files (unused by ``digits``).
        binarization: ``"static"`` (train binarized once) or ``"dynamic"`` (train kept as
            intensities; :meth:`Dataset.binarize` samples every minibatch). ``None`` takes the
            dataset's default: dynamic for ``mnist`` (Burda et al. 2015), static otherwise.

    The result depends on these arguments (and the files) only, never on a run's seed: every
    run of a dataset trains on the same static binarization and is evaluated on the same
    validation and test sets (:meth:`Dataset.fingerprint` records which).
    """
    _check_name(name)
    if binarization is None:
        binarization = DEFAULT_BINARIZATION[name]
    if binarization not in BINARIZATIONS:
        raise DataError(
            f"unknown binarization '{binarization}'; allowed: {', '.join(BINARIZATIONS)}"
        )
    if name in STATIC_ONLY and binarization != "static":
        raise DataError(
            f"dataset '{name}' is already binary; binarization must be 'static', "
            f"not '{binarization}' (use 'mnist' for dynamic binarization)"
        )
    return LOADERS[name](Path(data_dir), binarization)
