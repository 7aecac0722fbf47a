"""Latent-space diagnostics: the posterior's moments and KL to the prior, active units,
posterior collapse and the mutual information between x and z.

Where they are exact: for a diagonal Gaussian posterior (vae, iwae, semi_amortized) the mean,
the variance and KL(q(z|x) || p(z)) are closed form. For the flows and IAF, KL(q(z|x) || p(z)) =
E_q[log q(z|x) - log p(z)] is estimated by Monte Carlo from the posterior's own samples and
exact log-densities (with its standard error), and the mean and variance are sample moments. AVB's
implicit posterior has samples only: moments, but no KL.

Per dimension, the KL of the marginal q(z_i|x) is closed form for a diagonal Gaussian; otherwise
the marginal has no density, and the KL of the Gaussian with its mean and variance is reported,
labelled as such: a lower bound on KL(q(z_i|x) || p(z_i)) (the Gaussian has the largest entropy
of its variance), and the sum over dimensions is at most the total KL (the marginals' KLs add
up to at most the joint's against a factorized prior).

Active units and collapse are defined so that no unit is both: unit i is active when
Cov_x(E_q[z_i|x]) > a (Burda et al. 2015, Sec. 5.2), collapsed when its average KL is below
c <= a / 2; since KL(q(z_i|x) || N(0, 1)) >= E_q[z_i|x]^2 / 2 for the Gaussian and the
moment-matched KL alike, an active unit has average KL >= Cov_x / 2 > a / 2 >= c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from vaeinf.core.methods import Method
from vaeinf.core.methods.base import GAUSSIAN, chunking, standard_normal_log_prob
from vaeinf.evaluation.likelihood import summary


@dataclass
class PosteriorStatistics:
    """Per test point: mean and variance of q(z|x) (N, D), per-dimension KL (N, D) (closed
    form or moment-matched, see the module docstring), KL(q(z|x) || p(z)) (N,) or None without
    a density, and the Monte Carlo variance of each point's KL estimate (N,) (zero when
    closed form); ``samples``: draws per point (0 when closed form)."""

    mean: Tensor
    var: Tensor
    kl_dim: Tensor
    kl: Tensor | None
    kl_mc_var: Tensor | None
    samples: int

    @property
    def exact(self) -> bool:
        return self.samples == 0


def gaussian_dim_kl(mean: Tensor, var: Tensor) -> Tensor:
    """KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2 elementwise."""
    return 0.5 * (var + mean * mean - 1.0 - torch.log(var))


@torch.no_grad()
def posterior_statistics(model: Method, x: Tensor, n: int, memory_mb: float) -> PosteriorStatistics:
    """:class:`PosteriorStatistics` of the posterior at the points x (N, D_x): closed form for
    a diagonal Gaussian; otherwise from n samples per point (the KL from their exact log q where
    the posterior has a density), in chunks of points that fit ``memory_mb``."""
    post = model.posterior
    if post.family == GAUSSIAN:
        params = [post.local_params(xb) for xb in x.split(500)]
        mean = torch.cat([p["mu"] for p in params]).double()
        var = torch.exp(torch.cat([p["log_var"] for p in params]).double())
        kl_dim = gaussian_dim_kl(mean, var)
        return PosteriorStatistics(mean, var, kl_dim, kl_dim.sum(-1), torch.zeros(len(x)), 0)
    b, _ = chunking(model, len(x), n, memory_mb)
    means, variances, kls, kl_vars = [], [], [], []
    for xb in x.split(b):
        if post.has_density:
            z, log_q = post.rsample_and_log_prob(xb, n)  # (n, b, D), (n, b)
            d = (log_q - standard_normal_log_prob(z)).double()  # (n, b)
            kls.append(d.mean(0))
            kl_vars.append(d.var(0) / n)
        else:
            z = post.rsample(xb, n)
        z = z.double()
        means.append(z.mean(0))
        variances.append(z.var(0).clamp_min(1e-12))
    mean, var = torch.cat(means), torch.cat(variances)
    kl = torch.cat(kls) if kls else None
    kl_mc_var = torch.cat(kl_vars) if kl_vars else None
    return PosteriorStatistics(mean, var, gaussian_dim_kl(mean, var), kl, kl_mc_var, n)


def _unit_variance(mean: Tensor, var: Tensor, samples: int) -> tuple[Tensor, Tensor]:
    """Var_x of the posterior means (..., N, D) -> (..., D), and the noise floor subtracted
    from it (zero for exact means, ``samples`` 0): with sample means of n draws, Var_x of the
    estimates exceeds that of the true means by mean_x Var_q(z_i|x) / n, times (N - 1) / N."""
    v = mean.var(-2, correction=0)
    if samples == 0:
        return v, torch.zeros_like(v)
    n_pts = mean.shape[-2]
    floor = var.mean(-2) / samples * (n_pts - 1) / n_pts
    return v - floor, floor


def active_units(
    stats: PosteriorStatistics, threshold: float = 0.01, resamples: int = 200, seed: int = 0
) -> dict:
    """Burda et al. (2015) Sec. 5.2: unit i is active when Cov_x(E_q[z_i|x]) > threshold.

    With sample means over n draws the noise floor of :func:`_unit_variance` is subtracted, so
    the variance is estimated without bias; the floor is reported (``noise_floor``, 0 for exact
    means). ``bootstrap_sd``: the standard deviation of the count over ``resamples`` bootstrap
    resamples of the test points (its test-set uncertainty)."""
    m, v = stats.mean.double(), stats.var.double()
    var, floor = _unit_variance(m, v, stats.samples)  # (D,)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(m), (resamples, len(m)), generator=g)  # (R, N)
    per_chunk = max(1, 2**22 // (len(m) * m.shape[-1]))  # resamples of (N, D) per chunk
    counts = torch.cat(
        [
            (_unit_variance(m[i], v[i], stats.samples)[0] > threshold).sum(-1)  # (r,)
            for i in idx.split(per_chunk)
        ]
    ).double()
    return {
        "count": int((var > threshold).sum()),
        "bootstrap_sd": counts.std().item(),
        "threshold": threshold,
        "variance": var.tolist(),
        "mean_kind": "exact posterior mean"
        if stats.exact
        else f"sample mean of {stats.samples} posterior draws, noise floor subtracted",
        "noise_floor": floor.max().item(),
    }


def collapse(stats: PosteriorStatistics, threshold: float, active: dict) -> dict:
    """Per-dimension KL of the marginals q(z_i|x) averaged over x, the collapsed units (KL below
    ``threshold`` nats, after Lucas et al. 2019), the units both active (``active``, from
    :func:`active_units`) and collapsed (none when threshold <= the activity threshold / 2,
    see the module docstring), and the total KL(q(z|x) || p(z)) averaged over x with its
    standard error over points and its Monte Carlo part."""
    kl_dim = stats.kl_dim.double().mean(0)  # (D,)
    collapsed = kl_dim < threshold
    is_active = torch.tensor(active["variance"], dtype=torch.float64) > active["threshold"]
    out = {
        "kl_per_dim": kl_dim.tolist(),
        "kl_per_dim_sum": kl_dim.sum().item(),
        "collapsed_units": int(collapsed.sum()),
        "active_and_collapsed": int((collapsed & is_active).sum()),
        "threshold": threshold,
        "kl_kind": "closed form"
        if stats.exact
        else f"Gaussian with the mean and variance of the marginal q(z_i|x) from {stats.samples} "
        "draws: a lower bound on the marginal's KL",
    }
    if stats.kl is None:
        return out | {
            "kl_total": None,
            "kl_total_kind": "not available: the posterior has no density",
        }
    s = summary(stats.kl)
    return out | {
        "kl_total": s["mean"],
        "kl_total_stderr": s["stderr"],
        "kl_total_mc_stderr": math.sqrt(stats.kl_mc_var.double().sum().item()) / len(stats.kl),
        "kl_total_kind": "closed form"
        if stats.exact
        else f"Monte Carlo, E_q[log q(z|x) - log p(z)] over {stats.samples} draws per point",
    }


@torch.no_grad()
def mutual_information(
    model: Method, x: Tensor, memory_mb: float = 512, samples: int = 1, kl: Tensor | None = None
) -> dict:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n) the aggregate
    posterior of the N points (Hoffman & Johnson 2016, "ELBO surgery", Eq. 3), from ``samples``
    draws per point; the estimate is at most log N. Needs log q(z|x) at arbitrary z.

    Checked against the KL on the same points: E_x KL(q(z|x) || p(z)) = I_q(x; z) +
    KL(q(z) || p(z)) >= I_q(x; z) (their Eq. 4), and on the same draws the difference is the
    estimate of KL(q(z) || p(z)), mean of log q(z) - log p(z), reported with its standard error
    over points (``kl_minus_mi``). ``kl`` (N,): the per-point KL (:class:`PosteriorStatistics`),
    whose mean over these points is reported beside it (``kl_same_points``) and compared
    (``below_kl``: the estimate is at most that KL)."""
    post = model.posterior
    z, log_q = post.rsample_and_log_prob(x, samples)  # (S, N, D), (S, N)
    n = len(x)
    rows = max(1, int(memory_mb * 2**20 / (4 * (3 * model.latent + 2) * n)))
    flat = z.reshape(-1, z.shape[-1])  # (S N, D), sample-major
    try:
        log_agg = torch.cat(
            [
                torch.logsumexp(post.log_prob(zc.unsqueeze(1).expand(-1, n, -1), x), 1)
                for zc in flat.split(rows)
            ]
        ).view(samples, n) - math.log(n)  # (S, N)
    except NotImplementedError as e:
        return {"value": None, "reason": str(e)}
    mi = (log_q - log_agg).double().mean().item()
    diff = (log_agg - standard_normal_log_prob(z)).double().mean(0)  # (N,)
    out = {
        "value": mi,
        "n_points": n,
        "samples": samples,
        "bound": math.log(n),
        "kl_minus_mi": summary(diff),
    }
    if kl is not None:
        kl_here = kl.double().mean().item()
        out |= {"kl_same_points": kl_here, "below_kl": mi <= kl_here}
    return out
