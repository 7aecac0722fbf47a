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
from torch import Tensor, nn

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
    which needs a density at given z); pilot_chains, pilot_fraction: chains per point and
    annealing steps (this fraction of T, at least 2) of the pilot run that chooses the step
    sizes (:func:`step_sizes`); step_size: the pilot's initial HMC step size;
    target_accept, adapt_rate: after each pilot transition a chain's log step size moves by
    adapt_rate * (a - target_accept), a its acceptance probability; schedule_delta: the
    steepness delta of :func:`sigmoid_schedule`."""

    steps: int = 500
    chains: int = 8
    leapfrog: int = 2
    init: str = "prior"
    pilot_chains: int = 1
    pilot_fraction: float = 0.25
    step_size: float = 0.1
    target_accept: float = 0.65
    adapt_rate: float = 0.1
    schedule_delta: float = 4.0

    def __post_init__(self):
        for key, low in (("steps", 1), ("chains", 1), ("leapfrog", 1), ("pilot_chains", 1)):
            if getattr(self, key) < low:
                raise ValueError(f"AIS {key}: {getattr(self, key)!r}; must be >= {low}")
        if self.init not in INITS:
            raise ValueError(f"AIS init: {self.init!r}; allowed: {', '.join(INITS)}")
        if not 0 < self.pilot_fraction <= 1:
            raise ValueError(f"AIS pilot_fraction: {self.pilot_fraction!r}; must be in (0, 1]")
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


#: d activation / d input, from the activation's input a and output y (the manual backward of
#: :func:`log_lik_and_grad`); an activation not listed here goes through autograd.
_DERIVATIVES = {
    nn.Tanh: lambda a, y: 1 - y * y,
    nn.ReLU: lambda a, y: (a > 0).to(a.dtype),
    nn.ELU: lambda a, y: torch.where(a > 0, torch.ones_like(a), y + 1),
    nn.Softplus: lambda a, y: torch.sigmoid(a),
}


@torch.no_grad()
def log_lik_and_grad(decoder, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """log p(x|z) (S, B) and its gradient w.r.t. z (S, B, D) for the Bernoulli MLP ``decoder``
    at z (S, B, D), x (B, D_x) broadcast over S: the forward pass keeps each layer's input and
    output, and the backward is written out (d log p / d logits = x - sigmoid(logits), then
    through each Linear and activation), the same numbers as autograd without its per-call
    cost, which dominates at the small batches of AIS. A network with another module than
    Linear and the activations of :data:`_DERIVATIVES` is differentiated by autograd."""
    layers = list(decoder.net)
    if not all(isinstance(m, nn.Linear) or type(m) in _DERIVATIVES for m in layers):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            log_lik = decoder.log_prob(x, decoder(z))
            (grad,) = torch.autograd.grad(log_lik.sum(), z)
        return log_lik.detach(), grad
    h, saved = z, []
    for m in layers:
        out = m(h)
        saved.append((m, h, out))
        h = out
    log_lik = decoder.log_prob(x, h)  # (S, B)
    g = x - torch.sigmoid(h)  # (S, B, D_x)
    for m, a, y in reversed(saved):
        g = g @ m.weight if isinstance(m, nn.Linear) else g * _DERIVATIVES[type(m)](a, y)
    return log_lik, g


class _Path:
    """The geometric path for a chunk of points x (B, D_x), log f_beta = log p_0 + beta l with
    l = log f_T - log p_0, evaluated with gradients w.r.t. z at a batch of states z (S, B, D).
    From the prior, l = log p(x|z)."""

    def __init__(self, model: Method, x: Tensor, init: str):
        self.model, self.x, self.init = model, x, init

    def __call__(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """log p_0, l (S, B) and their gradients (S, B, D), all detached."""
        log_lik, g_lik = log_lik_and_grad(self.model.decoder, self.x, z)
        if self.init == "prior":
            return standard_normal_log_prob(z), log_lik, -z, g_lik
        with torch.enable_grad():
            zg = z.detach().requires_grad_()
            log_q = self.model.posterior.log_prob(zg, self.x)  # (S, B)
            (g_q,) = torch.autograd.grad(log_q.sum(), zg)
        log_q = log_q.detach()
        ratio = log_lik + standard_normal_log_prob(z) - log_q
        return log_q, ratio, g_q, g_lik - z - g_q


def anneal(
    path: Callable[[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]],
    z: Tensor,
    betas: Tensor,
    s: AISSettings,
    eps: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run AIS along ``betas`` from states z (S, B, D) distributed as the path's end at
    betas[0]: increasing betas run forward (p_0 -> f_T), decreasing ones in reverse. betas is
    (T + 1,) for all points or (T + 1, B), one schedule per point, so forward and reverse runs
    share one batch. Returns the log-weights (S, B) in float64,
    sum_t (beta_t - beta_{t-1}) [log f_T - log p_0](z_{t-1}) (Neal 2001, Eq. 3), the mean
    acceptance probability of the HMC transitions (a 0-d tensor) and the step sizes used,
    (T - 1, S, B, 1).

    Transition t is HMC (Neal 2011, "MCMC using Hamiltonian dynamics", Sec. 5.2) on
    log f_t = log p_0 + beta_t l (``path``) with unit mass and ``s.leapfrog`` leapfrog steps.
    Step sizes: ``eps`` (broadcastable to (T - 1, S, B, 1)), fixed before the run, which keeps
    every transition invariant for its f_t and so the weights exact; or, with ``eps`` None (a
    pilot run, :func:`step_sizes`), a per-chain step size adapted after each transition
    towards ``s.target_accept``, which makes a transition depend on the chain's past (its
    weights are then not those of AIS and are not used). The transition after the last weight
    update is skipped: it cannot change the weights.
    """
    log_p0, ell, g0, g_ell = path(z)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    accept_sum = torch.zeros((), dtype=torch.float64, device=z.device)
    betas = betas.to(device=z.device, dtype=torch.float64)
    steps = betas.diff(dim=0)  # (T,) or (T, B)
    b_all = betas.to(z.dtype)
    T = len(betas) - 1
    adapt = eps is None
    step = torch.full((*z.shape[:-1], 1), s.step_size, dtype=z.dtype, device=z.device)
    trace = []
    for t in range(1, T + 1):
        log_w += steps[t - 1] * ell.double()
        if t == T:
            break
        if not adapt:
            step = eps[t - 1]  # broadcasts against (S, B, 1)
        trace.append(step)
        b = b_all[t]  # () or (B,)
        bz = b.unsqueeze(-1)  # broadcasts against (S, B, D)
        # HMC at beta_t: U(z) = -(log p_0 + b l), grad log f_t = g0 + b g_l.
        p = torch.randn_like(z)  # (S, B, D)
        h_old = 0.5 * (p * p).sum(-1) - log_p0 - b * ell  # (S, B)
        zn = z
        p = p + (0.5 * step) * (g0 + bz * g_ell)
        for k in range(s.leapfrog):
            zn = zn + step * p
            q0, qe, n0, ne = path(zn)
            p = p + ((1.0 if k < s.leapfrog - 1 else 0.5) * step) * (n0 + bz * ne)
        log_a = (h_old - (0.5 * (p * p).sum(-1) - q0 - b * qe)).clamp(max=0.0)
        log_a = torch.nan_to_num(log_a, nan=-math.inf)  # a diverged trajectory is rejected
        a = torch.exp(log_a)  # (S, B), acceptance probability
        take = torch.rand_like(a) < a
        t3 = take.unsqueeze(-1)
        z, g0, g_ell = torch.where(t3, zn, z), torch.where(t3, n0, g0), torch.where(t3, ne, g_ell)
        log_p0, ell = torch.where(take, q0, log_p0), torch.where(take, qe, ell)
        if adapt:
            step = step * torch.exp(s.adapt_rate * (a - s.target_accept)).unsqueeze(-1)
        accept_sum += a.mean()
    shape = (*z.shape[:-1], 1)
    trace = torch.stack([e.expand(shape) for e in trace]) if trace else z.new_empty(0, *shape)
    return log_w, accept_sum / max(1, T - 1), trace


def step_sizes(path, z: Tensor, s: AISSettings) -> Tensor:
    """Per-point HMC step sizes for every transition of the forward schedule of ``s``,
    (T - 1, 1, B, 1), fixed before the AIS run that uses them: from a pilot run of
    ``s.pilot_chains`` chains per point (z: (pilot_chains, B, D) from the path's start) along a
    schedule of ``s.pilot_fraction`` T steps (at least 2) whose step sizes adapt
    (:func:`anneal` with ``eps`` None), the geometric mean over the pilot's chains,
    interpolated in log space at the same fraction of the schedule. The pilot's weights are
    discarded, so the adaptation never touches the weights of the run that is reported."""
    T = s.steps
    T_p = min(T, max(2, round(s.pilot_fraction * T)))
    pilot = dataclasses.replace(s, adapt_rate=s.adapt_rate * T / T_p)  # as fast per unit of beta
    _, _, trace = anneal(path, z, sigmoid_schedule(T_p, s.schedule_delta), pilot)
    log_eps = torch.log(trace).mean(1)  # (T_p - 1, B, 1), at t / T_p, t = 1 .. T_p - 1
    if T_p == T:
        return torch.exp(log_eps).unsqueeze(1)
    # Transition t of T sits at t / T; the pilot's at u / T_p: linear interpolation.
    pos = torch.arange(1, T, dtype=torch.float64) / T * T_p - 1  # index into the pilot's
    lo = pos.floor().clamp(0, T_p - 2).long()
    hi = (lo + 1).clamp(max=T_p - 2)
    frac = (pos - lo).clamp(0, 1).to(log_eps.dtype).view(-1, 1, 1)
    out = (1 - frac) * log_eps[lo] + frac * log_eps[hi]
    return torch.exp(out).unsqueeze(1)  # (T - 1, 1, B, 1)


def _log_mean_exp(log_w: Tensor) -> Tensor:
    """log (1/S) sum_s exp(log_w[s]) over dim 0, float64: (S, B) -> (B,)."""
    return torch.logsumexp(log_w.double(), 0) - math.log(len(log_w))


def points_per_chunk(model: Method, chains: int, memory_mb: float) -> int:
    """Points per chunk so that the (chains x points) rows of one gradient evaluation, with
    their HMC state (about a dozen latent-sized vectors per row), fit in ``memory_mb``."""
    per_row = bytes_per_row(model) + 4 * 12 * model.latent
    return max(1, int(memory_mb * 2**20 / (per_row * chains)))


def _initial(model: Method, x: Tensor, s: AISSettings, chains: int) -> Tensor:
    """``chains`` initial states per point drawn from p_0, (chains, B, D)."""
    if s.init == "prior":
        return torch.randn(chains, len(x), model.latent, device=x.device)
    post = model.posterior
    try:
        z, _ = post.rsample_and_log_prob(x[:1], 1)
        post.log_prob(z, x[:1])
    except NotImplementedError as e:
        raise ValueError(f"AIS init 'q' needs log q(z|x) at given z: {e}") from None
    with torch.no_grad():
        return post.rsample_and_log_prob(x, chains)[0].detach()


def _chunk(
    model: Method, x: Tensor, x_sim: Tensor, z_sim: Tensor, s: AISSettings
) -> tuple[Tensor, Tensor, Tensor]:
    """One batch: forward AIS on the points x (B, D_x) and on the simulated points x_sim
    (M, D_x), and reverse AIS on x_sim from their exact posterior samples z_sim (M, D), all
    with step sizes from one pilot run (:func:`step_sizes`; the reverse runs take the forward
    step sizes of their point in reverse order). Returns the forward log-weights (S, B + M),
    the reverse ones (S, M) and the summed acceptance over the B + 2M columns."""
    fwd = sigmoid_schedule(s.steps, s.schedule_delta)
    x_fwd = torch.cat([x, x_sim])  # (B + M, D_x)
    n_fwd, m = len(x_fwd), len(x_sim)
    path_fwd = _Path(model, x_fwd, s.init)
    eps = step_sizes(path_fwd, _initial(model, x_fwd, s, s.pilot_chains), s)
    z0 = _initial(model, x_fwd, s, s.chains)  # (S, B + M, D)
    if m == 0:
        log_w, a, _ = anneal(path_fwd, z0, fwd, s, eps)
        return log_w, log_w[:, :0], a * n_fwd
    z0 = torch.cat([z0, z_sim.expand(s.chains, *z_sim.shape)], 1)  # (S, B + 2M, D)
    betas = torch.cat([fwd[:, None].expand(-1, n_fwd), fwd.flip(0)[:, None].expand(-1, m)], 1)
    eps = torch.cat([eps, eps[:, :, n_fwd - m :].flip(0)], 2)  # (T - 1, 1, B + 2M, 1)
    path = _Path(model, torch.cat([x_fwd, x_sim]), s.init)
    log_w, a, _ = anneal(path, z0, betas, s, eps)  # (S, B + 2M)
    return log_w[:, :n_fwd], log_w[:, n_fwd:], a * (n_fwd + m)


def log_likelihood_and_bdmc(
    model: Method,
    x: Tensor,
    n_sim: int = 0,
    settings: AISSettings | None = None,
    memory_mb: float = 512,
    seed: int = 0,
) -> tuple[dict, dict | None]:
    """AIS estimates of log p(x) for every row of x (N, D_x) and, with ``n_sim`` > 0,
    bidirectional Monte Carlo (Grosse et al. 2015, Sec. 3) on ``n_sim`` points simulated from
    the model (:func:`simulate` with a generator seeded by ``seed``): forward AIS (p_0 -> f_T)
    gives a stochastic lower bound on log p(x), reverse AIS (f_T -> p_0, every chain started at
    the z* that generated x) a stochastic upper bound, -log (1/S) sum_s w_s^rev. Every chain of
    both runs shares the batches (a schedule per point), in chunks of points sized from
    ``memory_mb``; the S chains of a point are merged by log-mean-exp.

    Returns (AIS, BDMC): AIS with per_point (N,) float64, mean, stderr (over points), n, the
    settings, the mean acceptance probability and the wall time; BDMC (None without simulated
    points) with lower and upper (means over the points), their gap with its standard error
    (paired over points), n, the settings, the acceptance rate and the wall time.
    """
    s = settings or AISSettings()
    t0 = time.perf_counter()
    if n_sim:
        z_star, x_sim = simulate(model, n_sim, torch.Generator(device="cpu").manual_seed(seed))
        z_star, x_sim = z_star.to(x.device), x_sim.to(x.device)
    else:
        z_star, x_sim = x.new_zeros(0, model.latent), x[:0]
    # Columns per chunk: a data point takes one, a simulated point two (forward and reverse).
    b = points_per_chunk(model, s.chains, memory_mb)
    per_point = torch.empty(len(x), dtype=torch.float64)
    chain_var = torch.zeros(len(x), dtype=torch.float64)
    lower, upper = torch.empty(n_sim, dtype=torch.float64), torch.empty(n_sim, dtype=torch.float64)
    accept, i, j = 0.0, 0, 0
    while i < len(x) or j < n_sim:
        m = min(n_sim - j, b // 2)
        nb = min(len(x) - i, b - 2 * m)
        if nb + m == 0:  # a budget below one simulated point's two columns
            m = 1
        fwd, rev, a = _chunk(model, x[i : i + nb], x_sim[j : j + m], z_star[j : j + m], s)
        per_point[i : i + nb] = _log_mean_exp(fwd[:, :nb]).cpu()
        if s.chains > 1 and nb:
            chain_var[i : i + nb] = fwd[:, :nb].var(0).cpu()
        lower[j : j + m] = _log_mean_exp(fwd[:, nb:]).cpu()
        upper[j : j + m] = -_log_mean_exp(rev).cpu()
        accept += a.item()
        i, j = i + nb, j + m
    seconds = time.perf_counter() - t0
    acceptance = accept / (len(x) + 2 * n_sim)
    est = summary(per_point) | {
        "per_point": per_point,
        # The spread of a point's S log-weights: for small spread, log-mean-exp lies below
        # log p(x) by about Var(log w) / (2 S) (the delta method), an estimate of the bias.
        "log_weight_var": chain_var.mean().item() if s.chains > 1 else None,
        "bias_estimate": chain_var.mean().item() / (2 * s.chains) if s.chains > 1 else None,
        "settings": s.as_dict(),
        "acceptance": acceptance,
        "seconds": seconds,
    }
    if not n_sim:
        return est, None
    gap = summary(upper - lower)
    check = {
        "lower": lower.mean().item(),
        "upper": upper.mean().item(),
        "gap": gap["mean"],
        "gap_stderr": gap["stderr"],
        "n": n_sim,
        "settings": s.as_dict(),
        "acceptance": acceptance,
        "seconds": seconds,
    }
    return est, check


def log_likelihood(
    model: Method, x: Tensor, settings: AISSettings | None = None, memory_mb: float = 512
) -> dict:
    """AIS estimate of log p(x) for every row of x (N, D_x), S chains per point annealed from
    p_0 to p(x|z) p(z) (:func:`anneal`) with step sizes from a pilot run
    (:func:`step_sizes`) and merged by log-mean-exp: :func:`log_likelihood_and_bdmc` without
    simulated points."""
    return log_likelihood_and_bdmc(model, x, 0, settings, memory_mb)[0]


@torch.no_grad()
def simulate(model: Method, n: int, generator: torch.Generator | None = None):
    """(z*, x): n draws z* ~ p(z) (n, D) and x ~ p(x|z*) (n, D_x) from the model itself."""
    dev = model.decoder.net[-1].bias.device
    z = torch.randn(n, model.latent, generator=generator)
    x = torch.bernoulli(torch.sigmoid(model.decoder(z.to(dev))).cpu(), generator=generator)
    return z.to(dev), x.to(dev)


def bdmc(
    model: Method,
    n: int,
    settings: AISSettings | None = None,
    memory_mb: float = 512,
    seed: int = 0,
) -> dict:
    """Bidirectional Monte Carlo on n points simulated from the model:
    :func:`log_likelihood_and_bdmc` without data points."""
    dev = model.decoder.net[-1].bias.device
    x = torch.zeros(0, model.dim, device=dev)
    return log_likelihood_and_bdmc(model, x, n, settings, memory_mb, seed)[1]
