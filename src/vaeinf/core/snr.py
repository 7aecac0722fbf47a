"""The signal-to-noise ratio of the training gradient, per parameter, for the encoder and the
decoder (Rainforth et al. 2018, "Tighter Variational Bounds are Not Necessarily Better", Sec. 3,
Eq. 5):

    SNR_j = |E[g_j]| / sd(g_j),

g_j the j-th coordinate of the gradient of a method's training loss
(:meth:`vaeinf.core.methods.base.Method.training_loss`, its objective and estimator) on a fixed
minibatch, over independent draws of the samples z ~ q(z|x). Each part
(:meth:`Method.gradient_groups`) is summarized by the mean of SNR_j over its parameters (the
summary of Rainforth et al.), by their median, and by the root mean square with the bias of the
estimate under zero SNR removed (:func:`summarize`), each with a bootstrap interval over the
draws. The training records it at the start, the middle and the end (:mod:`vaeinf.core.train`);
the evaluation over a grid of K, with the slope of log SNR against log K
(:mod:`vaeinf.evaluation.snr`).

The draws are one batched computation (:func:`gradient_draws`): the loss is mapped over the
draws by ``torch.func.vmap`` (randomness ``"different"``: every draw its own samples) with a
copy of the parameters per draw, and one backward pass gives every draw's gradient, in chunks of
draws sized from a memory budget, so memory does not grow with K (a method whose loss takes
gradients itself declares another way, :attr:`Method.gradient_draws`). Every measurement runs in
its own random stream (the caller's is left as it was) and in training mode, the gradient a
training step would take.

With R draws, the estimate of a parameter whose true SNR is 0 is about sqrt(2 / (pi R)) on
average (|mean| of R draws over their s.d.): values near it are not resolved from zero, and a
summary is recorded with that level (``null_level``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from vaeinf.core import bounds
from vaeinf.core.data import Dataset
from vaeinf.core.methods import Method
from vaeinf.core.methods.base import bytes_per_row

#: Bootstrap resamples of the draws behind every interval (the s.d. of 32 resamples is within
#: about 13 % of the bootstrap's own).
BOOTSTRAP = 32

#: Coverage of the intervals: the estimate ± z s.d. of its bootstrap resamples (z of the normal
#: distribution). Not the percentiles of the resamples: near zero the estimate is biased upwards
#: (see ``null_level``), more so in a resample, whose repeated draws count as fewer.
LEVEL = 0.95

#: Bootstrap resamples held at once (each one value per parameter).
BOOTSTRAP_CHUNK = 32

#: Seed of the fixed binarization of the minibatch (dynamically binarized data).
BATCH_SEED = 20180704

#: The summaries over a part's parameters: Rainforth et al.'s mean of SNR_j, the median, and
#: the root of the mean of SNR_j^2 with the estimate's bias under zero SNR removed (see
#: :func:`summarize`).
SUMMARIES = ("mean", "median", "rms")


def fixed_minibatch(data: Dataset, n: int) -> Tensor:
    """The minibatch every measurement of a dataset uses: the first ``n`` points of the training
    set's fixed random order (:meth:`Dataset.subset`), binarized once with a fixed seed when the
    data are binarized dynamically. (n, D)."""
    x, _ = data.subset("train", n)
    return data.binarize(x, torch.Generator().manual_seed(BATCH_SEED))


def null_level(draws: int) -> float:
    """E|mean| / sd of ``draws`` draws of a gradient coordinate with mean 0: sqrt(2 / (pi R)),
    the level an estimate reaches where the true SNR is 0."""
    return math.sqrt(2 / (math.pi * draws))


#: How :func:`gradient_draws` batches the draws (:attr:`Method.gradient_draws`).
DRAWS_MODES = ("batched", "nested", "loop")


def gradient_draws(
    loss_fn: Callable[[dict[str, Tensor]], Tensor],
    params: dict[str, Tensor],
    draws: int,
    chunk: int | None = None,
    mode: str = "batched",
) -> dict[str, Tensor]:
    """The gradient of the scalar ``loss_fn(params)`` w.r.t. each tensor of ``params`` for
    ``draws`` independent draws of its random numbers: {name: (R, *shape)}.

    ``batched``: each chunk of ``chunk`` draws (None: all) is one ``vmap`` of ``loss_fn`` over
    the draws with ``randomness="different"`` (every random number it draws out of place,
    ``torch.randn`` and the like, differs between draws) on a copy of the parameters per draw,
    and one backward pass outside the vmap, whose gradient w.r.t. a draw's copy is that draw's
    gradient (DReG without its hook, :func:`vaeinf.core.bounds.hook_free`). ``nested``: a
    ``vmap`` of ``torch.func.grad`` of ``loss_fn``, which nests, for a loss that takes
    gradients itself (SA-VAE's refinement; it loads ``torch._dynamo``, seconds of CPU in a
    process that has not). ``loop``: one draw at a time, for a loss that also sets
    ``requires_grad`` inside (SA-VAE's refinement detached from the encoder), which neither
    batches.
    """
    chunk = 1 if mode == "loop" else chunk or draws
    out: dict[str, list[Tensor]] = {k: [] for k in params}
    with torch.enable_grad(), bounds.hook_free():
        for start in range(0, draws, chunk):
            n = min(chunk, draws - start)
            if mode == "loop":
                leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
                total = loss_fn(leaves)
                grads = torch.autograd.grad(total, list(leaves.values()), allow_unused=True)
                for (k, v), g in zip(leaves.items(), grads, strict=True):
                    out[k].append((torch.zeros_like(v) if g is None else g)[None])
                continue
            # A copy of the parameters per draw: what they make carries the draws' dimension.
            copies = {
                k: v.detach().unsqueeze(0).expand(n, *v.shape).clone() for k, v in params.items()
            }
            if mode == "nested":
                f = vmap(grad(lambda p, _: loss_fn(p)), in_dims=(0, 0), randomness="different")
                grads = f(copies, torch.zeros(n))
                for k in params:
                    out[k].append(grads[k])
                continue
            copies = {k: v.requires_grad_() for k, v in copies.items()}
            f = vmap(lambda p, _: loss_fn(p), in_dims=(0, 0), randomness="different")
            total = f(copies, torch.zeros(n)).sum()
            grads = torch.autograd.grad(total, list(copies.values()), allow_unused=True)
            for (k, v), g in zip(copies.items(), grads, strict=True):
                out[k].append(torch.zeros_like(v) if g is None else g)
    return {k: torch.cat(v) for k, v in out.items()}


def _summaries(mean: Tensor, var: Tensor, draws: int) -> Tensor:
    """The :data:`SUMMARIES` of rows of per-parameter means and variances over the draws,
    (b, P) each -> (b, 3); parameters of zero variance are left out."""
    ok = var > 0
    snr = torch.where(ok, mean.abs() / var.clamp_min(1e-30).sqrt(), torch.nan)  # (b, P)
    # E[mean^2] = mu^2 + sigma^2 / R and, for Gaussian draws, E[1 / s^2] = (R - 1) / ((R - 3)
    # sigma^2): so (R - 3) / (R - 1) mean^2 / s^2 - 1 / R estimates SNR^2 without bias.
    if draws > 3:
        sq = snr * snr * (draws - 3) / (draws - 1) - 1 / draws
        rms = sq.nanmean(1).clamp_min(0).sqrt()
    else:
        rms = torch.full(snr.shape[:1], torch.nan, dtype=snr.dtype)
    return torch.stack([snr.nanmean(1), snr.nanmedian(1).values, rms], 1)


def per_parameter(g: Tensor) -> Tensor:
    """|mean| / s.d. over the draws of every coordinate, g (R, P) -> (P,), NaN where the s.d.
    is 0 (a coordinate the samples do not reach)."""
    g = g.double()
    sd = g.std(0)
    return torch.where(sd > 0, g.mean(0).abs() / sd, torch.nan)


@dataclass(frozen=True)
class PartSNR:
    """The SNR of one part's parameters: each of :data:`SUMMARIES` over them (``values``) and
    for each bootstrap resample of the draws (``boot``, (BOOTSTRAP, 3)), the number of
    parameters with a defined SNR and the number of draws."""

    values: np.ndarray
    boot: np.ndarray
    n_params: int
    draws: int

    def summary(self, name: str) -> float:
        return float(self.values[SUMMARIES.index(name)])

    def resamples(self, name: str) -> np.ndarray:
        return self.boot[:, SUMMARIES.index(name)]

    def record(self) -> dict:
        """The metrics.json entry: each summary, its interval (``_low``, ``_high``), the number
        of parameters and the level of an estimate where the SNR is 0."""
        z = NormalDist().inv_cdf((1 + LEVEL) / 2)
        out = {}
        for i, name in enumerate(SUMMARIES):
            value, sd = float(self.values[i]), float(np.nanstd(self.boot[:, i], ddof=1))
            out |= {name: value, f"{name}_low": value - z * sd, f"{name}_high": value + z * sd}
        return out | {"n_params": self.n_params, "null_level": null_level(self.draws)}


def summarize(g: Tensor, generator: torch.Generator, n_boot: int = BOOTSTRAP) -> PartSNR:
    """:class:`PartSNR` of the per-draw gradients g (R, P) of one part: the summaries, and the
    same for ``n_boot`` resamples of the R draws with replacement (count-weighted moments of
    the centred draws, :data:`BOOTSTRAP_CHUNK` resamples at a time)."""
    R = g.shape[0]
    g = g.float()
    mean = g.mean(0)
    centred = g - mean  # (R, P): moments of centred draws lose nothing to cancellation
    var = (centred * centred).sum(0) / (R - 1)
    ok = var > 0
    centred, mean, var = centred[:, ok], mean[ok], var[ok]
    values = _summaries(mean[None], var[None], R)[0]
    idx = torch.randint(R, (n_boot, R), generator=generator)  # the resamples' draws
    boot = []
    for rows in idx.split(BOOTSTRAP_CHUNK):
        counts = torch.zeros(len(rows), R).scatter_add_(1, rows, torch.ones(rows.shape))
        m = counts @ centred / R  # (b, P'): a resample's mean minus the draws' mean
        v = (counts @ (centred * centred) / R - m * m).clamp_min(0) * (R / (R - 1))
        boot.append(_summaries(m + mean, v, R))
    return PartSNR(
        values=values.double().numpy(),
        boot=torch.cat(boot).double().numpy(),
        n_params=int(ok.sum()),
        draws=R,
    )


class _TrainingLoss(nn.Module):
    """The method's training loss as a module's forward, for ``functional_call``."""

    def __init__(self, model: Method):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, K: int, estimator: str) -> Tensor:
        return self.model.training_loss(x, K, estimator)[0]


@contextlib.contextmanager
def _measuring(model: Method, seed: int):
    """Training mode, the eager loss (``train.compile`` off: vmap traces the loss itself), and
    a random stream of its own from ``seed``; all restored afterwards."""
    was_training, compiled = model.training, getattr(model, "compile_loss", False)
    device = next(model.parameters()).device
    model.train()
    model.compile_loss = False
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)
        model.compile_loss = compiled


def draws_per_chunk(model: Method, K: int, points: int, memory_mb: float) -> int:
    """Draws per vmap chunk so that the activations of a chunk (forward and backward, about
    three times the forward's rows of :func:`bytes_per_row`) fit in ``memory_mb``."""
    per_draw = 3 * bytes_per_row(model) * K * points
    return max(1, int(memory_mb * 2**20 // per_draw))


def measure(
    model: Method,
    x: Tensor,
    K: int,
    estimator: str,
    draws: int,
    seed: int,
    chunk: int | None = None,
) -> dict[str, PartSNR]:
    """The SNR of the gradient of ``model.training_loss(x, K, estimator)`` over ``draws`` draws
    of the samples, on the minibatch x (B, D_x): {part: :class:`PartSNR`} for the parts of
    ``model.gradient_groups()``. ``chunk``: draws per vmap chunk (:func:`draws_per_chunk`;
    None: all at once). The model needs only ``named_parameters``, ``training_loss`` and
    ``gradient_groups`` (a :class:`Method`, or a model of known gradient moments in a test)."""
    wrapper = _TrainingLoss(model)
    params = {f"model.{n}": p.detach() for n, p in model.named_parameters()}

    def loss_fn(p: dict[str, Tensor]) -> Tensor:
        return functional_call(wrapper, p, (x, K, estimator))

    mode = getattr(model, "gradient_draws", "batched")
    with _measuring(model, seed):
        g = gradient_draws(loss_fn, params, draws, chunk, mode)
    boot = torch.Generator().manual_seed(seed)
    out = {}
    for part, names in model.gradient_groups().items():
        flat = torch.cat([g[f"model.{n}"].reshape(draws, -1) for n in names], 1).cpu()
        out[part] = summarize(flat, boot)
    return out
