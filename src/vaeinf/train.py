"""The training loop: schedule, checkpoint/resume, SIGTERM handling, NaN guard, progress.

Determinism: every epoch starts from ``torch.manual_seed(epoch_seed(seed, epoch))`` and draws its
minibatch order from a generator seeded the same way, so an epoch is a pure function of (model,
optimizer state, seed, epoch). A checkpoint at an epoch boundary therefore resumes exactly; one
written mid-epoch (on SIGTERM) also stores the batch index and the RNG state. A run killed at any
point and restarted ends with the same parameters as an uninterrupted run (on the CPU).

Run directory (declared outputs of the workflow's train rule: ``model.pt``, ``train_log.csv``):
``config.yaml`` (resolved config), ``checkpoint.pt`` (latest state, not a declared output, so a
retry after preemption resumes from it), ``train_log.csv`` (one row per epoch), ``model.pt``
(final weights, written last).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from vaeinf.bounds import iwae
from vaeinf.config import RunConfig
from vaeinf.data import Dataset, load_dataset
from vaeinf.errors import ConfigError, DivergedObjective, NonFiniteLoss, Preempted
from vaeinf.methods import Method, build_model
from vaeinf.results import atomic_write_bytes, atomic_write_text

log = logging.getLogger("vaeinf.train")

LOG_COLUMNS = ["epoch", "lr", "train_objective", "val_LK", "val_L1", "seconds"]
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
CONFIG = "config.yaml"
TRAIN_LOG = "train_log.csv"


def burda_schedule() -> list[float]:
    """Per-epoch learning rates of Burda et al. (2015) Sec. 5: 3**i epochs at 1e-3 * 10**(-i/7)."""
    return [1e-3 * 10 ** (-i / 7) for i in range(8) for _ in range(3**i)]


def learning_rates(cfg: RunConfig) -> list[float]:
    """The learning rate of every epoch; its length is the number of epochs."""
    if cfg.train.schedule == "burda":
        lrs = burda_schedule()
        return lrs[: cfg.train.epochs] if cfg.train.epochs else lrs
    return [cfg.train.lr] * (cfg.train.epochs or 1)


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device': 'cuda' requested but no GPU is visible")
    return torch.device(name)


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write the resolved config, or check it matches the one a previous attempt wrote."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    path = run_dir / CONFIG
    if path.exists():
        old = yaml.safe_load(path.read_text())
        if old != cfg.to_dict():
            diff = sorted(k for k in cfg.to_dict() if old.get(k) != cfg.to_dict()[k])
            raise ConfigError(
                f"run directory '{run_dir}' holds a run with a different config "
                f"(differs in: {', '.join(diff)}); use another --out or delete it"
            )
        return
    atomic_write_text(path, text)


@torch.no_grad()
def validation_bounds(model: Method, x: torch.Tensor, Ks: list[int], seed: int) -> list[float]:
    """Mean L_K on x for each K, with its own RNG so training randomness is untouched."""
    model.eval()
    out = []
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        for K in Ks:
            vals = [iwae(model.eval_log_weights(xb, K)).sum() for xb in x.split(500)]
            out.append((torch.stack(vals).sum() / len(x)).item())
    model.train()
    return out


class _StopFlag:
    """Turns SIGTERM/SIGINT into a flag the loop checks between batches."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame):
        self.signum = signum

    @contextlib.contextmanager
    def installed(self):
        sigs = [signal.SIGTERM, signal.SIGINT]
        try:
            old = {s: signal.signal(s, self) for s in sigs}
        except ValueError:  # not the main thread: no handlers
            yield self
            return
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def _write_log(run_dir: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, LOG_COLUMNS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(run_dir / TRAIN_LOG, buf.getvalue())


def _save_checkpoint(path: Path, model: Method, optimizers: list, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizers": [o.state_dict() for o in optimizers],
            **state,
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def prepare(cfg: RunConfig, data: Dataset | None = None) -> tuple[Dataset, Method, torch.device]:
    """Load the data and build the model on its device (nothing written)."""
    device = resolve_device(cfg.train.device)
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, binarization=cfg.binarization)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.dim, data.train_mean()).to(device)
    return data, model, device


def train(cfg: RunConfig, run_dir: str | Path, progress: bool | None = None) -> Path:
    """Train the run described by ``cfg`` into ``run_dir``, resuming from its checkpoint.

    Returns the path of ``model.pt``. Raises :class:`Preempted` after checkpointing on
    SIGTERM/SIGINT, :class:`NonFiniteLoss` (naming epoch and batch) on a NaN/inf loss and
    :class:`DivergedObjective` (naming the epoch) when :meth:`Method.check_epoch` rejects an epoch.
    """
    run_dir = Path(run_dir)
    # Everything that can fail on bad input happens before the run directory is touched.
    data, model, device = prepare(cfg)
    lrs = learning_rates(cfg)
    optimizers = model.make_optimizers(cfg.train.lr, cfg.train.betas, cfg.train.eps)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)

    ckpt_path = run_dir / CHECKPOINT
    rows: list[dict] = []
    start_epoch, start_batch, rng_state, partial = 0, 0, None, (0.0, 0)
    saved = None  # (epoch, batch) of the checkpoint on disk
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        for o, s in zip(optimizers, ck["optimizers"], strict=True):
            o.load_state_dict(s)
        rows, start_epoch, start_batch = ck["rows"], ck["epoch"], ck["batch"]
        rng_state, partial = ck.get("rng"), tuple(ck.get("partial", (0.0, 0)))
        saved = (start_epoch, start_batch)
        log.info("resuming %s from epoch %d batch %d", run_dir, start_epoch, start_batch)
        _write_log(run_dir, rows)

    train_x = data.train.to(device)
    val_x = data.subset("valid", cfg.train.val_points)[0].to(device)
    n_batches = math.ceil(len(train_x) / cfg.train.batch_size)
    K = cfg.K
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=len(lrs), initial=start_epoch, disable=not progress, unit="epoch")
    last_print = time.monotonic()
    stop = _StopFlag()
    model.train()

    def state(epoch, batch, rng=None, partial=(0.0, 0)):
        return {"rows": rows, "epoch": epoch, "batch": batch, "rng": rng, "partial": partial}

    with stop.installed():
        for epoch in range(start_epoch, len(lrs)):
            t0 = time.perf_counter()
            for g in optimizers[0].param_groups:
                g["lr"] = lrs[epoch]
            # Batch order from the epoch's seed; the global RNG (samples, dynamic binarization)
            # either restarts from the same seed or, mid-epoch, from the saved state.
            gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
            perm = torch.randperm(len(train_x), generator=gen).to(device)
            if rng_state is not None:
                _set_rng(rng_state)
                rng_state = None
            else:
                torch.manual_seed(epoch_seed(cfg.seed, epoch))
            total, count = partial
            partial = (0.0, 0)
            for b in range(start_batch, n_batches):
                if stop.signum is not None:
                    _save_checkpoint(
                        ckpt_path, model, optimizers, state(epoch, b, _get_rng(), (total, count))
                    )
                    raise Preempted(
                        f"stopped by signal {stop.signum} at epoch {epoch} batch {b}; "
                        f"checkpoint written to {ckpt_path}"
                    )
                idx = perm[b * cfg.train.batch_size : (b + 1) * cfg.train.batch_size]
                x = data.binarize(train_x[idx])
                try:
                    value = model.train_step(x, K, cfg.estimator, optimizers)
                except NonFiniteLoss as e:
                    raise NonFiniteLoss(
                        f"non-finite training loss at epoch {epoch} batch {b} ({e}); the last "
                        f"good checkpoint is kept in {ckpt_path}"
                    ) from None
                total += value.sum().item()
                count += len(x)
            start_batch = 0
            val_lk, val_l1 = validation_bounds(
                model, val_x, [K, 1], seed=epoch_seed(cfg.seed, epoch) + 7
            )
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "epoch": epoch + 1,
                    "lr": lrs[epoch],
                    "train_objective": total / max(count, 1),
                    "val_LK": val_lk,
                    "val_L1": val_l1,
                    "seconds": seconds,
                }
            )
            _write_log(run_dir, rows)
            try:  # before this epoch's checkpoint, so that the one on disk passed every check
                model.check_epoch(rows[-1]["train_objective"], val_lk)
            except DivergedObjective as e:
                if saved is None:
                    kept = "no checkpoint had been written"
                elif saved[1] == 0:
                    kept = f"the last good checkpoint (after epoch {saved[0]}) is kept"
                else:  # a resumed mid-epoch checkpoint, inside an epoch not yet checked
                    kept = f"the checkpoint from epoch {saved[0] + 1} batch {saved[1]} is kept"
                kept += "" if saved is None else f" in {ckpt_path}"
                raise DivergedObjective(f"epoch {epoch + 1}: {e}; {kept}") from None
            done = epoch + 1 == len(lrs)
            if done or (epoch + 1) % cfg.train.checkpoint_every == 0:
                _save_checkpoint(ckpt_path, model, optimizers, state(epoch + 1, 0))
                saved = (epoch + 1, 0)
            bar.update(1)
            bar.set_postfix(train=f"{rows[-1]['train_objective']:.2f}", val=f"{val_lk:.2f}")
            if not progress and (done or time.monotonic() - last_print > 10 or epoch == 0):
                last_print = time.monotonic()
                print(
                    f"epoch {epoch + 1}/{len(lrs)} train {rows[-1]['train_objective']:.3f} "
                    f"val L_{K} {val_lk:.3f} val L_1 {val_l1:.3f} ({seconds:.2f} s)",
                    flush=True,
                )
    bar.close()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(run_dir / MODEL, buf.getvalue())
    return run_dir / MODEL


def _get_rng() -> dict:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng(state: dict) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_trained(run_dir: str | Path, data: Dataset | None = None):
    """(cfg, data, model) of a finished run, the model in eval mode on its device."""
    from vaeinf.config import load_config

    run_dir = Path(run_dir)
    if not (run_dir / MODEL).exists():
        raise FileNotFoundError(f"'{run_dir}' holds no {MODEL}: train it first")
    cfg = load_config(run_dir / CONFIG)
    data, model, device = prepare(cfg, data)
    model.load_state_dict(torch.load(run_dir / MODEL, map_location=device, weights_only=True))
    model.eval()
    return cfg, data, model
