"""The training loop: schedule, checkpoint/resume, SIGTERM handling, NaN guard, progress.

Determinism: every epoch starts from ``torch.manual_seed(epoch_seed(seed, epoch))`` and draws its
minibatch order from a generator seeded the same way, so an epoch is a pure function of (model,
optimizer state, seed, epoch). A checkpoint at an epoch boundary therefore resumes exactly; one
written mid-epoch (on SIGTERM) also stores the batch index and the RNG state. A run killed at any
point and restarted ends with the same parameters as an uninterrupted run (on the CPU).

Run directory (declared outputs of the workflow's train rule: ``model.pt``, ``train_log.csv``,
``train_snr.json``): ``config.yaml`` (resolved config), ``checkpoint.pt`` (latest state and the
best one, not a declared output, so a retry after preemption resumes from it),
``train_log.csv`` (one row per epoch), ``train_snr.json`` (the gradient's signal-to-noise ratio
at the start, the middle and the end of training, :func:`snr_epochs`), ``model.pt`` (the
weights of the epoch with the best validation bound, written last).

When a run ends (:func:`stop_reason`): at the cap of ``train.epochs`` epochs, at the budget of
``train.max_steps`` optimizer steps, or when its smoothed validation bound has stopped improving
for ``train.patience`` epochs (early stopping, Prechelt 1998). The rule reads only the log's
rows, which the checkpoint holds, so a resumed run stops where an uninterrupted one does. The
log's last row names the reason (column ``stop``: converged, budget or cap); column ``steps`` is
the cumulative number of optimizer steps, the abscissa of the study's compute axis.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from vaeinf.config import RunConfig, read_yaml
from vaeinf.core.bounds import iwae
from vaeinf.core.data import Dataset, load_dataset
from vaeinf.core.methods import Method, build_model
from vaeinf.core.methods.base import bytes_per_row
from vaeinf.core.snr import draws_per_chunk, fixed_minibatch, measure
from vaeinf.errors import ConfigError, DamagedFile, DivergedObjective, NonFiniteLoss, Preempted
from vaeinf.rundir import (
    CHECKPOINT,
    CONFIG,
    MODEL,
    TRAIN_LOG,
    TRAIN_SNR,
    atomic_write_bytes,
    atomic_write_text,
    check_writable_dir,
    remove_temporaries,
    write_json,
)

log = logging.getLogger("vaeinf.core.train")

LOG_COLUMNS = [
    "epoch",
    "lr",
    "steps",
    "train_objective",
    "val_LK",
    "val_L1",
    "val_bound",
    "val_smoothed",
    "seconds",
    "stop",
]

#: Why a run ended (the log's ``stop`` column): the smoothed validation bound stopped improving,
#: the step budget was spent, or the epoch cap was reached.
STOP_REASONS = ("converged", "budget", "cap")


def smoothed(previous: float | None, value: float, smoothing: float) -> float:
    """s_t = smoothing * s_{t-1} + (1 - smoothing) * v_t, with s_1 = v_1."""
    return value if previous is None else smoothing * previous + (1 - smoothing) * value


def epochs_since_improvement(curve: list[float], min_delta: float) -> int:
    """Epochs since the smoothed bound last exceeded its best earlier value by more than
    ``min_delta`` (the first epoch is an improvement)."""
    best, since = -math.inf, 0
    for v in curve:
        if v > best + min_delta:
            best, since = v, 0
        else:
            since += 1
    return since


def stop_reason(rows: list[dict], cfg: RunConfig) -> str | None:
    """Why the run ends after the epochs of ``rows`` (None: it goes on). Converged first: a run
    whose bound has stopped improving at the cap converged."""
    if not rows:
        return None
    t = cfg.train
    curve = [float(r["val_smoothed"]) for r in rows]
    if (
        t.patience is not None
        and len(rows) >= t.min_epochs
        and epochs_since_improvement(curve, t.min_delta) >= t.patience
    ):
        return "converged"
    if t.max_steps is not None and int(rows[-1]["steps"]) >= t.max_steps:
        return "budget"
    if len(rows) >= n_epochs(cfg):
        return "cap"
    return None


def best_epoch(rows: list[dict]) -> int:
    """The epoch (from 1) of the highest validation bound (the first of equal ones): the state
    ``model.pt`` holds."""
    values = [float(r["val_bound"]) for r in rows]
    return int(rows[max(range(len(values)), key=lambda i: (values[i], -i))]["epoch"])


BURDA_STAGES = 8  # Burda et al. (2015) Sec. 5: stage i runs 3**i epochs, i = 0..7


def burda_lr(epoch: int) -> float:
    """Learning rate of ``epoch`` (from 0) in Burda et al. (2015) Sec. 5: 1e-3 * 10**(-i/7) in
    stage i, which covers epochs sum_{j<i} 3**j .. sum_{j<=i} 3**j - 1."""
    stage = 0
    while epoch >= 3**stage and stage < BURDA_STAGES - 1:
        epoch -= 3**stage
        stage += 1
    return 1e-3 * 10 ** (-stage / 7)


def burda_schedule() -> list[float]:
    """Per-epoch learning rates of Burda et al. (2015) Sec. 5: 3**i epochs at 1e-3 * 10**(-i/7)."""
    return [burda_lr(e) for e in range(n_burda_epochs())]


def n_burda_epochs() -> int:
    return sum(3**i for i in range(BURDA_STAGES))  # 3280


def n_epochs(cfg: RunConfig) -> int:
    """The number of epochs of the run."""
    if cfg.train.schedule == "burda":
        return min(cfg.train.epochs or n_burda_epochs(), n_burda_epochs())
    return cfg.train.epochs or 1


def epoch_lr(cfg: RunConfig, epoch: int) -> float:
    """The learning rate of ``epoch`` (from 0), computed on demand: the number of epochs may be
    far more than a list of them would hold."""
    return burda_lr(epoch) if cfg.train.schedule == "burda" else cfg.train.lr


def learning_rates(cfg: RunConfig) -> list[float]:
    """The learning rate of every epoch (for inspection; training uses :func:`epoch_lr`)."""
    return [epoch_lr(cfg, e) for e in range(n_epochs(cfg))]


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device': 'cuda' requested but no GPU is visible")
    return torch.device(name)


def machine_memory(device: torch.device) -> int:
    """Bytes of memory of the device: the GPU's, or the machine's physical memory."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(cfg: RunConfig, model: Method, data: Dataset, device: torch.device) -> None:
    """Refuse (ConfigError naming the keys and the limit) a config whose largest single batch of
    samples cannot fit in the device's memory: a training step (K samples of each of a batch's
    points, activations kept for the backward pass: about 3 times the forward), a validation
    batch (K samples of up to 500 points), and evaluation's posterior moments and prior samples.
    Evaluation's importance sampling is chunked to eval.memory_mb and needs no check."""
    row = bytes_per_row(model)
    have = machine_memory(device)
    ev = cfg.eval
    batches = [
        (("K", "train.batch_size"), 3 * cfg.K * min(cfg.train.batch_size, len(data.train))),
        (
            ("K", "train.val_k", "train.val_points"),
            max(cfg.K, cfg.train.val_k or 1) * min(500, cfg.train.val_points or len(data.valid)),
        ),
        (("eval.moment_samples",), ev.moment_samples * min(500, len(data.test))),
        (("eval.n_prior_samples",), ev.n_prior_samples),
    ]
    where = "GPU" if device.type == "cuda" else "machine"
    for keys, rows in batches:
        need = rows * row
        if need > have:
            values = ", ".join(f"{k} = {_config_value(cfg, k)}" for k in keys)
            raise ConfigError(
                f"config key{'s' if len(keys) > 1 else ''} {values}: need about "
                f"{need / 2**30:.3g} GiB at once; this {where} has {have / 2**30:.3g} GiB "
                f"of memory: lower {' or '.join(keys)}"
            )


def _config_value(cfg: RunConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def load_torch_file(path: Path, device, todo: str, weights_only: bool = True):
    """torch.load of a run-directory file; a truncated or corrupt file is a DamagedFile naming
    it and ``todo`` (what to do about it)."""
    try:
        return torch.load(path, map_location=device, weights_only=weights_only)
    except torch.OutOfMemoryError:
        raise
    except MemoryError:  # garbage read as a length: our files are far smaller than memory
        raise DamagedFile(
            f"'{path}' is damaged (it claims more memory than the machine has); {todo}"
        ) from None
    except Exception as e:  # truncated, corrupt, or not a torch file at all
        raise DamagedFile(f"'{path}' is damaged ({_first_line(e)}); {todo}") from e


def load_state(model: torch.nn.Module, state, path: Path, todo: str) -> None:
    """model.load_state_dict; a state of another architecture is a DamagedFile naming ``path``."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        details = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        raise DamagedFile(
            f"'{path}' does not match the run's {CONFIG} "
            f"({(details or [_first_line(e)])[0][:160]}); {todo}"
        ) from e


def _first_line(e: BaseException) -> str:
    """The first sentence of an error's message, for a one-line report."""
    text = str(e).strip()
    first = text.splitlines()[0].split(". ")[0].rstrip(".") if text else ""
    return first[:160] or type(e).__name__


def read_training_config(path: Path, todo: str) -> RunConfig:
    """The validated config of a run directory's ``config.yaml`` (evaluation settings, if an
    older vaeinf wrote them there, are read too); DamagedFile naming it and ``todo``."""
    from vaeinf.config import from_dict, validate

    try:
        raw = read_yaml(path, "the run's config file")
        if not isinstance(raw, dict):
            raise ConfigError(f"the run's config file '{path}' holds no mapping of config keys")
        return validate(from_dict(RunConfig, raw))
    except ConfigError as e:
        raise DamagedFile(f"{e}; {todo}") from None


def identity_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested mappings."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "method_options":
            out += identity_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write the training config, or check that the run in ``run_dir`` has the same identity
    (:meth:`RunConfig.identity`); operational settings that differ are rewritten, evaluation
    settings are not compared."""
    path = run_dir / CONFIG
    if path.exists():
        todo = "delete it to start the run afresh, or use another --out"
        old = read_training_config(path, todo)
        diff = identity_diff(old.identity(), cfg.identity())
        if diff:
            raise ConfigError(
                f"run directory '{run_dir}' holds a run of another training identity "
                f"(differs in: {', '.join(diff)}); use another --out or delete it"
            )
        if read_yaml(path, "the run's config file") == cfg.training():
            return
    atomic_write_text(path, yaml.safe_dump(cfg.training(), sort_keys=False))


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


#: Memory budget (MB) of a training-time SNR measurement's chunks of draws.
SNR_MEMORY_MB = 256


def snr_epochs(epochs: int) -> dict[str, int]:
    """When the training measures the gradient's SNR, as epochs completed: the start (0), the
    middle (half the epochs, rounded down; left out when it is the start or the end) and the
    end."""
    out = {"start": 0, "middle": epochs // 2, "end": epochs}
    if out["middle"] in (0, epochs):
        del out["middle"]
    return out


def training_snr(model: Method, x: torch.Tensor, cfg: RunConfig, epoch: int) -> dict:
    """The SNR of the training gradient at the run's K on the fixed minibatch x
    (:func:`vaeinf.core.snr.measure`, ``train.snr_draws`` draws) after ``epoch`` epochs, with
    its own random stream, and the seconds it took."""
    t = time.perf_counter()
    draws = cfg.train.snr_draws
    chunk = draws_per_chunk(model, cfg.K, len(x), SNR_MEMORY_MB)
    parts = measure(model, x, cfg.K, cfg.estimator, draws, epoch_seed(cfg.seed, epoch) + 11, chunk)
    return {
        "epoch": epoch,
        "K": cfg.K,
        "draws": draws,
        "points": len(x),
        **{part: s.record() for part, s in parts.items()},
        "seconds": time.perf_counter() - t,
    }


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
    check_writable_dir(run_dir, "run directory")
    data, model, device = prepare(cfg)
    check_memory(cfg, model, data, device)
    epochs = n_epochs(cfg)
    optimizers = model.make_optimizers(cfg.train.lr, cfg.train.betas, cfg.train.eps)
    ckpt_path = run_dir / CHECKPOINT
    rows: list[dict] = []
    best: dict | None = None  # the state of the best validation bound so far (on the CPU)
    snr: dict[str, dict] = {}  # stage -> record (training_snr)
    start_epoch, start_batch, rng_state, partial = 0, 0, None, (0.0, 0)
    resumed = ckpt_path.exists()
    saved = None  # (epoch, batch) of the checkpoint on disk
    if (run_dir / CONFIG).exists():
        save_config(cfg, run_dir)  # only compares: a run of another config is refused first
    if resumed:
        restart = "delete it to restart the training from scratch, or use another --out"
        ck = load_torch_file(ckpt_path, device, restart, weights_only=False)
        try:
            load_state(model, ck["model"], ckpt_path, restart)
            for o, s in zip(optimizers, ck["optimizers"], strict=True):
                o.load_state_dict(s)
            rows, start_epoch, start_batch = ck["rows"], ck["epoch"], ck["batch"]
            rng_state, partial = ck.get("rng"), tuple(ck.get("partial", (0.0, 0)))
            best = ck["best"]
            if rows and (best is None or set(best) != set(ck["model"])):
                raise KeyError("best")
            snr = dict(ck.get("snr", {}))
            saved = (start_epoch, start_batch)
        except DamagedFile:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise DamagedFile(f"'{ckpt_path}' is damaged ({_first_line(e)}); {restart}") from e
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir)
    remove_temporaries(run_dir)
    if resumed:
        log.info("resuming %s from epoch %d batch %d", run_dir, start_epoch, start_batch)
        print(f"resuming from {ckpt_path}: epoch {start_epoch} batch {start_batch}", flush=True)
        _write_log(run_dir, rows)
    else:
        print(f"starting afresh: no {CHECKPOINT} in {run_dir}", flush=True)

    train_x = (
        data.train
        if cfg.train.train_points is None
        else data.subset("train", cfg.train.train_points)[0]
    ).to(device)
    val_x = data.subset("valid", cfg.train.val_points)[0].to(device)
    n_batches = math.ceil(len(train_x) / cfg.train.batch_size)
    K = cfg.K
    val_ks = [K, 1] if cfg.train.val_k in (None, K) else [K, 1, cfg.train.val_k]
    finished = stop_reason(rows, cfg) is not None  # a resumed run that had already ended
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=epochs, initial=start_epoch, disable=not progress, unit="epoch")
    last_print = time.monotonic()
    stop = _StopFlag()
    model.train()

    def state(epoch, batch, rng=None, partial=(0.0, 0)):
        return {
            "rows": rows,
            "epoch": epoch,
            "batch": batch,
            "rng": rng,
            "partial": partial,
            "best": best,
            "snr": snr,
        }

    snr_at = snr_epochs(epochs) if cfg.train.snr_draws else {}
    snr_x = fixed_minibatch(data, cfg.train.snr_points).to(device) if snr_at else None

    def measure_snr(done: int) -> None:
        """Record each stage due after ``done`` epochs (once: a resumed run keeps its own)."""
        for stage, epoch in snr_at.items():
            if epoch == done and stage not in snr:
                snr[stage] = training_snr(model, snr_x, cfg, epoch)

    with stop.installed():
        for epoch in range(start_epoch, epochs):
            if finished:
                break
            if start_batch == 0:  # outside the epoch's time
                measure_snr(epoch)
            t0 = time.perf_counter()
            lr = epoch_lr(cfg, epoch)
            for g in optimizers[0].param_groups:
                g["lr"] = lr
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
            steps_before = int(rows[-1]["steps"]) if rows else 0
            # The budget may end the run inside an epoch: the last epoch then has fewer steps.
            last_batch = n_batches
            if cfg.train.max_steps is not None:
                last_batch = min(n_batches, cfg.train.max_steps - steps_before)
            for b in range(start_batch, last_batch):
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
                    if ckpt_path.exists():
                        kept = f"the last good checkpoint is kept in {ckpt_path}"
                    else:
                        kept = "no checkpoint had been written yet"
                    raise NonFiniteLoss(
                        f"non-finite training loss at epoch {epoch} batch {b} ({e}); {kept}; "
                        "a lower train.lr may help"
                    ) from None
                total += value.sum().item()
                count += len(x)
            start_batch = 0
            # Each distinct K once (K = 1 or K = val_k would otherwise be computed twice).
            unique = list(dict.fromkeys(val_ks))
            got = dict(
                zip(
                    unique,
                    validation_bounds(model, val_x, unique, seed=epoch_seed(cfg.seed, epoch) + 7),
                    strict=True,
                )
            )
            val_lk, val_l1, *val_k = (got[k] for k in val_ks)
            val_bound = val_k[0] if val_k else val_lk
            seconds = time.perf_counter() - t0
            previous = float(rows[-1]["val_smoothed"]) if rows else None
            rows.append(
                {
                    "epoch": epoch + 1,
                    "lr": lr,
                    "steps": steps_before + last_batch,
                    "train_objective": total / max(count, 1),
                    "val_LK": val_lk,
                    "val_L1": val_l1,
                    "val_bound": val_bound,
                    "val_smoothed": smoothed(previous, val_bound, cfg.train.smoothing),
                    "seconds": seconds,
                    "stop": "",
                }
            )
            if best_epoch(rows) == epoch + 1:
                best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            reason = stop_reason(rows, cfg)
            rows[-1]["stop"] = reason or ""
            _write_log(run_dir, rows)
            try:  # before this epoch's checkpoint, so that the one on disk passed every check
                model.check_epoch(rows[-1]["train_objective"], val_lk, cfg.K)
            except DivergedObjective as e:
                if saved is None:
                    kept = "no checkpoint had been written"
                elif saved[1] == 0:
                    kept = f"the last good checkpoint (after epoch {saved[0]}) is kept"
                else:  # a resumed mid-epoch checkpoint, inside an epoch not yet checked
                    kept = f"the checkpoint from epoch {saved[0] + 1} batch {saved[1]} is kept"
                kept += "" if saved is None else f" in {ckpt_path}"
                raise DivergedObjective(f"epoch {epoch + 1}: {e}; {kept}") from None
            done = reason is not None
            if done or (epoch + 1) % cfg.train.checkpoint_every == 0:
                _save_checkpoint(ckpt_path, model, optimizers, state(epoch + 1, 0))
                saved = (epoch + 1, 0)
            bar.update(1)
            bar.set_postfix(train=f"{rows[-1]['train_objective']:.2f}", val=f"{val_lk:.2f}")
            if not progress and (done or time.monotonic() - last_print > 10 or epoch == 0):
                last_print = time.monotonic()
                print(
                    f"epoch {epoch + 1}/{epochs} train {rows[-1]['train_objective']:.3f} "
                    f"val L_{K} {val_lk:.3f} val L_1 {val_l1:.3f} ({seconds:.2f} s)"
                    + (f"; stopped: {reason}, best epoch {best_epoch(rows)}" if done else ""),
                    flush=True,
                )
            if done:
                break
    bar.close()
    if snr_at and "end" not in snr:  # the end is where the training ended (the cap, or sooner)
        snr["end"] = training_snr(model, snr_x, cfg, len(rows))
    write_json(run_dir / TRAIN_SNR, {"stages": snr})
    buf = io.BytesIO()
    torch.save(best if best is not None else model.state_dict(), buf)
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
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory '{run_dir}' does not exist or is not a directory")
    if not (run_dir / MODEL).exists():
        raise ConfigError(f"run directory '{run_dir}' holds no {MODEL}: train it first")
    if not (run_dir / CONFIG).exists():
        raise DamagedFile(
            f"run directory '{run_dir}' holds {MODEL} but no {CONFIG}; restore it or retrain"
        )
    cfg = read_training_config(run_dir / CONFIG, f"restore it or retrain ({CONFIG} is damaged)")
    data, model, device = prepare(cfg, data)
    retrain = f"delete it and rerun `vaeinf train --out {run_dir} --config {run_dir / CONFIG}`" + (
        f" (it resumes from {CHECKPOINT})" if (run_dir / CHECKPOINT).exists() else ""
    )
    state = load_torch_file(run_dir / MODEL, device, retrain)
    load_state(model, state, run_dir / MODEL, f"restore {CONFIG}, or {retrain}")
    model.eval()
    return cfg, data, model
