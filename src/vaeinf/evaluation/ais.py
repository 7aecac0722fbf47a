"""Annealed importance sampling (AIS) of log p(x), and its bidirectional Monte Carlo (BDMC) check.

Why: a stochastic lower bound on log p(x) that does not depend on q, to measure the inference
gap. AIS anneals from p_0 = p(z) (or q) to p(x|z) p(z) along the geometric path
log f_t = (1 - beta_t) log p_0 + beta_t log f_T with HMC transitions, a sigmoidal schedule and a
per-chain step size adapted towards acceptance 0.65; BDMC runs it backwards from the exact
posterior sample of simulated data for a stochastic upper bound. Batched over points and
chains, in chunks sized from a memory budget.

Reference: Neal (2001), "Annealed importance sampling", Eq. 3; Wu, Burda, Salakhutdinov & Grosse
(2017), "On the Quantitative Analysis of Decoder-Based Generative Models", ICLR, Sec. 4; Grosse,
Ghahramani & Adams (2015), "Sandwiching the marginal likelihood using bidirectional Monte Carlo",
Sec. 3.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import torch
from torch import Tensor

from vaeinf.core.methods import Method
from vaeinf.core.methods.base import bytes_per_row, standard_normal_log_prob
from vaeinf.evaluation.likelihood import summary

#: Initial distributions of the path.
INITS = ("prior", "q")


@dataclasses.dataclass(frozen=True)
class AISSettings:
    """steps: T, the number of annealing steps (intermediate distributions beta_1..beta_T);
    chains: S, independent chains per point; leapfrog: leapfrog steps per HMC transition;
    init: "prior" (p_0 = p(z), independent of q) or "q" (p_0 = q(z|x), the trained posterior,
    which needs a density at given z); step_size: the initial HMC step size of every chain;
    target_accept, adapt_rate: after each transition a chain's log step size moves by
    adapt_rate * (a - target_accept), a its acceptance probability; schedule_delta: the
    steepness delta of :func:`sigmoid_schedule`."""

    steps: int = 100
    chains: int = 4
    leapfrog: int = 5
    init: str = "prior"
    step_size: float = 0.1
    target_accept: float = 0.65
    adapt_rate: float = 0.1
    schedule_delta: float = 4.0

    def __post_init__(self):
        for key, low in (("steps", 1), ("chains", 1), ("leapfrog", 1)):
            if getattr(self, key) < low:
                raise ValueError(f"AIS {key}: {getattr(self, key)!r}; must be >= {low}")
        if self.init not in INITS:
            raise ValueError(f"AIS init: {self.init!r}; allowed: {', '.join(INITS)}")
        if not self.step_size > 0 or not 0 < self.target_accept < 1 or self.adapt_rate < 0:
            raise ValueError(
                f"AIS step_size {self.step_size!r} must be > 0, target_accept "
                f"{self.target_accept!r} in (0, 1), adapt_rate {self.adapt_rate!r} >= 0"
            )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"schedule": "sigmoid", "transition": "HMC"}


def sigmoid_schedule(T: int, delta: float = 4.0) -> Tensor:
    """beta_0..beta_T (T + 1 values, float64) rising from 0 to 1: beta_t proportional to
    sigmoid(delta (2 t / T - 1)), shifted and scaled to start at 0 and end at 1 (Grosse et al.
    2015, Sec. 6; Wu et al. 2017, Sec. 4). Denser near both ends than a linear schedule."""
    t = torch.arange(T + 1, dtype=torch.float64)
    s = torch.sigmoid(delta * (2 * t / T - 1))
    return (s - s[0]) / (s[-1] - s[0])


class _Path:
    """The two ends of the geometric path for a chunk of points x (B, D_x), evaluated with their
    gradients w.r.t. z at a batch of states z (S, B, D)."""

    def __init__(self, model: Method, x: Tensor, init: str):
        self.model, self.x, self.init = model, x, init

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """log p_0, log f_T (S, B) and their gradients (S, B, D), all detached."""
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            dec = self.model.decoder
            log_prior = standard_normal_log_prob(z)  # (S, B)
            log_f = dec.log_prob(self.x, dec(z)) + log_prior  # (S, B), decoder on S*B rows
            (g_f,) = torch.autograd.grad(log_f.sum(), z)
            if self.init == "prior":
                return log_prior.detach(), log_f.detach(), -z.detach(), g_f
            log_q = self.model.posterior.log_prob(z, self.x)  # (S, B)
            (g_q,) = torch.autograd.grad(log_q.sum(), z)
            return log_q.detach(), log_f.detach(), g_q, g_f


def anneal(
    path: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]],
    z: Tensor,
    betas: Tensor,
    s: AISSettings,
) -> tuple[Tensor, Tensor]:
    """Run AIS along ``betas`` from states z (S, B, D) distributed as the path's end at
    betas[0]: increasing betas run forward (p_0 -> f_T), decreasing ones in reverse. betas is
    (T + 1,) for all points or (T + 1, B), one schedule per point, so forward and reverse runs
    share one batch. Returns the log-weights (S, B) in float64,
    sum_t (beta_t - beta_{t-1}) [log f_T - log p_0](z_{t-1}) (Neal 2001, Eq. 3), and the mean
    acceptance probability of the HMC transitions (a 0-d tensor).

    Transition t is HMC (Neal 2011, "MCMC using Hamiltonian dynamics", Sec. 5.2) on
    log f_t = (1 - beta_t) log p_0 + beta_t log f_T with unit mass, ``s.leapfrog`` leapfrog steps
    and a per-chain step size eps (S, B, 1) adapted after each transition. The transition after
    the last weight update is skipped: it cannot change the weights.
    """
    log_p0, log_f, g0, gf = path(z)
    eps = torch.full((*z.shape[:-1], 1), s.step_size, dtype=z.dtype, device=z.device)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    accept_sum = torch.zeros((), dtype=torch.float64, device=z.device)
    betas = betas.to(device=z.device, dtype=torch.float64)
    T = len(betas) - 1
    for t in range(1, T + 1):
        log_w += (betas[t] - betas[t - 1]) * (log_f.double() - log_p0.double())
        if t == T:
            break
        # HMC at beta_t: U(z) = -log f_t(z), grad log f_t = (1 - b) g0 + b gf.
        b = betas[t].to(z.dtype)  # () or (B,)
        bz = b.unsqueeze(-1)  # broadcasts against (S, B, D)
        p = torch.randn_like(z)  # (S, B, D)
        h_old = -((1 - b) * log_p0 + b * log_f) + 0.5 * (p * p).sum(-1)  # (S, B)
        zn, q0, qf, n0, nf = z, log_p0, log_f, g0, gf
        p = p + 0.5 * eps * ((1 - bz) * n0 + bz * nf)
        for k in range(s.leapfrog):
            zn = zn + eps * p
            q0, qf, n0, nf = path(zn)
            p = p + (1.0 if k < s.leapfrog - 1 else 0.5) * eps * ((1 - bz) * n0 + bz * nf)
        h_new = -((1 - b) * q0 + b * qf) + 0.5 * (p * p).sum(-1)
        log_a = (h_old - h_new).clamp(max=0.0)
        log_a = torch.where(torch.isfinite(log_a), log_a, -math.inf)  # a diverged trajectory
        a = torch.exp(log_a)  # (S, B), acceptance probability
        take = torch.rand_like(a) < a
        t3 = take.unsqueeze(-1)
        z, g0, gf = torch.where(t3, zn, z), torch.where(t3, n0, g0), torch.where(t3, nf, gf)
        log_p0, log_f = torch.where(take, q0, log_p0), torch.where(take, qf, log_f)
        eps = eps * torch.exp(s.adapt_rate * (a - s.target_accept)).unsqueeze(-1)
        accept_sum += a.double().mean()
    return log_w, accept_sum / max(1, T - 1)


def _log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/S) sum_s exp(log_w[s]) over dim 0, float64: (S, B) -> (B,)."""
    return torch.logsumexp(log_w.double(), 0) - math.log(len(log_w))


def points_per_chunk(model: Method, chains: int, memory_mb: float) -> int:
    """Points per chunk so that the (chains x points) rows of one gradient evaluation, with
    their HMC state (about a dozen latent-sized vectors per row), fit in ``memory_mb``."""
    per_row = bytes_per_row(model) + 4 * 12 * model.latent
    return max(1, int(memory_mb * 2**20 / (per_row * chains)))


def _initial(model: Method, x: Tensor, s: AISSettings) -> Tensor:
    """S initial states per point drawn from p_0, (S, B, D)."""
    if s.init == "prior":
        return torch.randn(s.chains, len(x), model.latent, device=x.device)
    post = model.posterior
    try:
        z, _ = post.rsample_and_log_prob(x[:1], 1)
        post.log_prob(z, x[:1])
    except NotImplementedError as e:
        raise ValueError(f"AIS init 'q' needs log q(z|x) at given z: {e}") from None
    with torch.no_grad():
        return post.rsample_and_log_prob(x, s.chains)[0].detach()


def log_likelihood(
    model: Method, x: Tensor, settings: AISSettings | None = None, memory_mb: float = 512
) -> dict:
    """AIS estimate of log p(x) for every row of x (N, D_x): per chunk of points, S chains per
    point annealed from p_0 to p(x|z) p(z) (:func:`anneal`) and merged by log-mean-exp.

    Returns per_point (N,) float64, mean, stderr (over points), n, the settings, the mean
    acceptance probability and the wall time.
    """
    s = settings or AISSettings()
    betas = sigmoid_schedule(s.steps, s.schedule_delta)
    per_point = torch.empty(len(x), dtype=torch.float64)
    accept, t0 = [], time.perf_counter()
    b = points_per_chunk(model, s.chains, memory_mb)
    for start in range(0, len(x), b):
        xb = x[start : start + b]
        log_w, a = anneal(_Path(model, xb, s.init), _initial(model, xb, s), betas, s)
        per_point[start : start + len(xb)] = _log_mean_exp(log_w).cpu()
        accept.append(a.item() * len(xb))
    return summary(per_point) | {
        "per_point": per_point,
        "settings": s.as_dict(),
        "acceptance": sum(accept) / len(x),
        "seconds": time.perf_counter() - t0,
    }


@torch.no_grad()
def simulate(model: Method, n: int, generator: torch.Generator | None = None):
    """(z*, x): n draws z* ~ p(z) (n, D) and x ~ p(x|z*) (n, D_x) from the model itself."""
    dev = model.decoder.net[-1].bias.device
    z = torch.randn(n, model.latent, generator=generator, device=dev)
    x = torch.bernoulli(torch.sigmoid(model.decoder(z)), generator=generator)
    return z, x


def bdmc(
    model: Method,
    n: int,
    settings: AISSettings | None = None,
    memory_mb: float = 512,
    seed: int = 0,
) -> dict:
    """Bidirectional Monte Carlo (Grosse et al. 2015, Sec. 3) on n points simulated from the
    model: forward AIS (p_0 -> f_T) gives a stochastic lower bound on log p(x), reverse AIS
    (f_T -> p_0, every chain started at the z* that generated x) a stochastic upper bound,
    -log (1/S) sum_s w_s^rev. Both directions run in one batch (a schedule per point).
    Returns lower and upper (means over the n points), their gap with its standard error
    (paired over points), n, the settings, the acceptance rate and the wall time."""
    s = settings or AISSettings()
    t0 = time.perf_counter()
    z_star, x = simulate(model, n, torch.Generator(device="cpu").manual_seed(seed))
    fwd = sigmoid_schedule(s.steps, s.schedule_delta)
    lower, upper = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
    accept = []
    b = max(1, points_per_chunk(model, s.chains, memory_mb) // 2)
    for start in range(0, n, b):
        xb, zb = x[start : start + b], z_star[start : start + b]
        m = len(xb)
        z0 = torch.cat([_initial(model, xb, s), zb.expand(s.chains, *zb.shape)], 1)  # (S, 2m, D)
        betas = torch.cat([fwd[:, None].expand(-1, m), fwd.flip(0)[:, None].expand(-1, m)], 1)
        log_w, a = anneal(_Path(model, torch.cat([xb, xb]), s.init), z0, betas, s)  # (S, 2m)
        lower[start : start + m] = _log_mean_exp(log_w[:, :m]).cpu()
        upper[start : start + m] = -_log_mean_exp(log_w[:, m:]).cpu()
        accept.append(a.item() * m)
    gap = summary(upper - lower)
    return {
        "lower": lower.mean().item(),
        "upper": upper.mean().item(),
        "gap": gap["mean"],
        "gap_stderr": gap["stderr"],
        "n": n,
        "settings": s.as_dict(),
        "acceptance": sum(accept) / n,
        "seconds": time.perf_counter() - t0,
    }
