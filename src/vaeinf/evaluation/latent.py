"""Latent-space diagnostics: posterior means, active units, posterior collapse and the mutual
information between x and z."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaeinf.core.methods import Method


@torch.no_grad()
def posterior_means(model: Method, x: Tensor, n: int) -> Tensor:
    """E_q[z|x] for every point, (N, D); closed form where the posterior has one."""
    return torch.cat([model.posterior.mean(xb, n) for xb in x.split(500)])


def active_units(means: Tensor, threshold: float = 0.01) -> dict:
    """Burda et al. (2015) Sec. 5.2: unit i is active when Cov_x(E_q[z_i|x]) > threshold."""
    var = means.double().var(0, correction=0)  # (D,)
    return {
        "count": int((var > threshold).sum()),
        "threshold": threshold,
        "variance": var.tolist(),
    }


@torch.no_grad()
def collapse(model: Method, x: Tensor, n: int, threshold: float = 0.01) -> dict:
    """Per-dimension KL(q(z_i|x) || p(z_i)) averaged over x, and the collapsed units (KL below
    ``threshold`` nats), following Lucas et al. (2019)'s definition of posterior collapse."""
    kl = torch.cat([model.posterior.dim_kl(xb, n) for xb in x.split(500)]).double().mean(0)
    return {
        "kl_per_dim": kl.tolist(),
        "kl_total": kl.sum().item(),
        "collapsed_units": int((kl < threshold).sum()),
        "threshold": threshold,
        "kl_kind": model.posterior.dim_kl_kind,
    }


@torch.no_grad()
def mutual_information(model: Method, x: Tensor, memory_mb: float = 512) -> dict:
    """I_q(x; z) = E_x E_q(z|x)[log q(z|x) - log q(z)], q(z) = (1/N) sum_n q(z|x_n) the aggregate
    posterior (Hoffman & Johnson 2016, "ELBO surgery", Eq. 3), one z per point, q(z) by the
    sum over all N points. The estimate is at most log N. Needs log q(z|x) at arbitrary z."""
    post = model.posterior
    z, log_q = post.rsample_and_log_prob(x, 1)  # (1, N, D), (1, N)
    z, log_q = z[0], log_q[0]
    n = len(x)
    rows = max(1, int(memory_mb * 2**20 / (4 * (3 * model.latent + 2) * n)))
    try:
        log_agg = torch.cat(
            [
                torch.logsumexp(post.log_prob(zc.unsqueeze(1).expand(-1, n, -1), x), 1)
                for zc in z.split(rows)
            ]
        ) - math.log(n)  # (N,)
    except NotImplementedError as e:
        return {"value": None, "reason": str(e)}
    return {"value": (log_q - log_agg).double().mean().item(), "n_points": n, "bound": math.log(n)}
