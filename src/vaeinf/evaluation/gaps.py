"""The inference gap split into an approximation and an amortization gap, with AIS as log p(x).

Why: to tell how much of log p(x) - L[q_phi] comes from the family and how much from the
encoder. Per point, approximation gap = log p(x) - L[q*] and amortization gap = L[q*] - L[q_phi],
q* the best member of the family found by Adam from the encoder's output, L the ELBO averaged
over ``elbo_samples`` draws in float64, log p(x) the AIS estimate; the two add up exactly. The
fully factorized Gaussian's q* is reported for every run as a common yardstick.

Reference: Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders",
ICML, Table 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from vaeinf.core.methods import Method
from vaeinf.core.methods.base import GAUSSIAN, NO_FAMILY, chunking
from vaeinf.evaluation.likelihood import summary

Sampler = Callable[[dict[str, Tensor], int], tuple[Tensor, Tensor]]


@dataclasses.dataclass(frozen=True)
class QStarSettings:
    """max_steps: cap on Adam steps; lr: Adam's learning rate; samples: draws per step of the
    ELBO's gradient; window, tol: stop when the mean ELBO over the points, averaged over the
    last ``window`` steps, rose by less than tol * |mean ELBO| over the previous window;
    elbo_samples: draws per point when evaluating L[q]."""

    max_steps: int = 300
    lr: float = 1e-2
    samples: int = 8
    window: int = 25
    tol: float = 1e-4
    elbo_samples: int = 500

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"optimizer": "Adam"}


# -- the fully factorized Gaussian family ---------------------------------------------------------


def gaussian_sampler(params: dict[str, Tensor], K: int) -> tuple[Tensor, Tensor]:
    """z (K, B, D) and log N(z; mu, diag exp(log_var)) (K, B) from params mu, log_var (B, D)."""
    q = Normal(params["mu"], torch.exp(0.5 * params["log_var"]))
    z = q.rsample((K,))
    return z, Independent(q, 1).log_prob(z)


@torch.no_grad()
def gaussian_start(model: Method, x: Tensor, n: int = 256) -> tuple[dict[str, Tensor], str]:
    """Starting (mu, log_var) of the Gaussian q* and how it was obtained: the posterior's own
    Gaussian parameters where its family is the diagonal Gaussian; otherwise the mean and
    variance of n of its samples."""
    if model.posterior.family == GAUSSIAN:
        local = model.posterior.local_params(x)
        return {k: v.detach() for k, v in local.items()}, "the posterior's Gaussian"
    z = model.posterior.rsample(x, n)  # (n, B, D)
    var = z.var(0).clamp_min(1e-8)
    return {"mu": z.mean(0), "log_var": torch.log(var)}, f"moments of {n} posterior samples"


# -- ELBO and its per-point optimum -------------------------------------------------------------


def _log_joint(model: Method, x: Tensor, z: Tensor) -> Tensor:
    """log p(x|z) + log p(z), (K, B)."""
    return model.decoder.log_prob(x, model.decoder(z)) + model.prior().log_prob(z)


@torch.no_grad()
def elbo(
    model: Method,
    x: Tensor,
    n: int,
    memory_mb: float,
    sampler: Sampler | None = None,
    params: dict[str, Tensor] | None = None,
) -> Tensor:
    """Per-point ELBO (N,) float64: the average of log w = log p(x, z) - log q(z) over n draws.

    With ``sampler``/``params``: q is that family member (params' leading dim N); otherwise q
    is the model's posterior q_phi (:meth:`Method.log_weights`). Points and draws are chunked as
    in :func:`vaeinf.evaluation.likelihood.log_weight_chunks` (bounded memory)."""
    b, s = chunking(model, len(x), n, memory_mb)
    out = torch.empty(len(x), dtype=torch.float64)
    for start in range(0, len(x), b):
        sl = slice(start, start + b)
        xb, total = x[sl], torch.zeros(len(x[sl]), dtype=torch.float64, device=x.device)
        for k0 in range(0, n, s):
            k = min(s, n - k0)
            if sampler is None:
                log_w = model.log_weights(xb, k)[0]
            else:
                z, log_q = sampler({key: v[sl] for key, v in params.items()}, k)
                log_w = _log_joint(model, xb, z) - log_q  # (k, b)
            total += log_w.double().sum(0)
        out[sl] = (total / n).cpu()
    return out


def optimize(
    model: Method, x: Tensor, start: dict[str, Tensor], sampler: Sampler, s: QStarSettings
) -> tuple[dict[str, Tensor], dict]:
    """q* per point: Adam on the per-point parameters (one optimizer over (B, ...) tensors; the
    points do not interact, so the gradient of the batch sum is every point's own) ascending
    the ``samples``-draw ELBO, from ``start``, until the windowed test of
    :class:`QStarSettings` holds or ``max_steps``. The model's parameters stay fixed (only the
    local parameters are differentiated). Returns the parameters and {steps, converged}."""
    params = {k: v.detach().clone().requires_grad_() for k, v in start.items()}
    leaves = list(params.values())
    m = [torch.zeros_like(p) for p in leaves]
    v = [torch.zeros_like(p) for p in leaves]
    trace: list[float] = []
    converged = False
    for step in range(1, s.max_steps + 1):
        with torch.enable_grad():
            z, log_q = sampler(params, s.samples)  # (S, B, D), (S, B)
            per_point = (_log_joint(model, x, z) - log_q).mean(0)  # (B,)
            grads = torch.autograd.grad(per_point.sum(), leaves)
        with torch.no_grad():
            _adam_ascent(leaves, grads, m, v, step, s.lr)
        trace.append(per_point.detach().double().mean().item())
        w = s.window
        if len(trace) >= 2 * w:
            recent, before = sum(trace[-w:]) / w, sum(trace[-2 * w : -w]) / w
            if recent - before < s.tol * abs(recent):
                converged = True
                break
    return {k: v.detach() for k, v in params.items()}, {
        "steps": len(trace),
        "converged": converged,
    }


def _adam_ascent(params, grads, m, v, step, lr, b1=0.9, b2=0.999, eps=1e-8) -> None:
    """One Adam step (Kingma & Ba 2015, Algorithm 1) ascending ``grads``, in place. Written out
    because constructing ``torch.optim.Adam`` imports torch._dynamo, a cost of seconds in an
    evaluation process that never trains."""
    for p, g, m_, v_ in zip(params, grads, m, v, strict=True):
        m_.mul_(b1).add_(g, alpha=1 - b1)
        v_.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v_ / (1 - b2**step)).sqrt_().add_(eps)
        p.addcdiv_(m_, denom, value=lr / (1 - b1**step))


def q_star(
    model: Method,
    x: Tensor,
    family: str,
    s: QStarSettings,
    memory_mb: float,
    start: tuple[dict[str, Tensor], str] | None = None,
) -> tuple[Tensor, dict]:
    """L[q*] per point (N,) for ``family`` "own" (the posterior's per-point family,
    :meth:`Posterior.local_params`) or "gaussian" (the yardstick, from ``start`` or
    :func:`gaussian_start`), and a description of what was optimized."""
    t0 = time.perf_counter()
    if family == "own":
        with torch.no_grad():
            init = model.posterior.local_params(x)
        sampler, how = model.posterior.rsample_and_log_prob_local, "the encoder's output"
        kind = f"{type(model.posterior).__name__}'s per-point parameters ({', '.join(init)})"
    else:
        init, how = start or gaussian_start(model, x)
        sampler, kind = gaussian_sampler, "fully factorized Gaussian (mu, log sigma^2)"
    best, info = optimize(model, x, init, sampler, s)
    values = elbo(model, x, s.elbo_samples, memory_mb, sampler, best)
    info |= {"family": kind, "start": how, "seconds": time.perf_counter() - t0}
    return values, info


def gap_split(
    model: Method, x: Tensor, log_px: Tensor, s: QStarSettings, memory_mb: float = 512
) -> dict:
    """Cremer et al. (2018)'s split of log p(x) - L[q_phi] on the points x (N, D_x), given
    per-point log p^(x) (N,) (the AIS estimate).

    L[q_phi]: the ELBO of the trained posterior; for a posterior without a density (AVB) the
    ELBO of the Gaussian moment-matched to its samples (the yardstick's start), never the
    adversary. q* of the own family where the posterior has one (otherwise the Gaussian, said so
    under ``own_family``), and the Gaussian yardstick always. Gaps per point, then summarized:
    approximation + amortization = log p^(x) - L[q_phi] holds per point and in the means."""
    log_px = log_px.double().cpu()
    post = model.posterior
    g_start = gaussian_start(model, x)
    if post.has_density:
        l_phi = elbo(model, x, s.elbo_samples, memory_mb)
        phi_kind = "ELBO of the trained posterior q_phi(z|x)"
    else:
        l_phi = elbo(model, x, s.elbo_samples, memory_mb, gaussian_sampler, g_start[0])
        phi_kind = (
            "the posterior has no density: ELBO of the diagonal Gaussian with the "
            f"{g_start[1]} (the adversary is not used)"
        )
    gauss, gauss_info = q_star(model, x, "gaussian", s, memory_mb, g_start)
    if post.family == NO_FAMILY:
        own, own_info = gauss, dict(gauss_info)
        own_note = (
            f"{type(post).__name__} has no per-point parameter family: the fully factorized "
            "Gaussian stands in for it"
        )
    elif post.family == GAUSSIAN:
        own, own_info = gauss, dict(gauss_info)
        own_note = "the posterior's own family is the fully factorized Gaussian"
    else:
        own, own_info = q_star(model, x, "own", s, memory_mb)
        own_note = "the posterior's own per-point family"

    def split(l_star: Tensor) -> dict:
        approx, amort = log_px - l_star, l_star - l_phi
        return {
            "approximation_gap": summary(approx),
            "amortization_gap": summary(amort),
            "inference_gap": summary(log_px - l_phi),
        }

    return {
        "n": len(x),
        "log_px": summary(log_px),
        "elbo_q_phi": summary(l_phi) | {"kind": phi_kind},
        "own_family": {"elbo_q_star": summary(own) | own_info, "note": own_note, **split(own)},
        "gaussian": {"elbo_q_star": summary(gauss) | gauss_info, **split(gauss)},
        "settings": s.as_dict(),
        "per_point": {"log_px": log_px, "elbo_q_phi": l_phi, "own": own, "gaussian": gauss},
    }
