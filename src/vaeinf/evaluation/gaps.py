"""The inference gap split into an approximation and an amortization gap, with AIS as log p(x).

Why: to tell how much of log p(x) - L[q_phi] comes from the family and how much from the
encoder. Per point, approximation gap = log p(x) - L[q*] and amortization gap = L[q*] - L[q_phi],
q* the best member of the family found by Adam from the encoder's output, log p(x) the AIS
estimate; the two add up exactly. L is the ELBO (Cremer et al.'s definition) and, for an
encoder trained on the importance-weighted bound L_K, also L_K, the bound it was trained with:
under the ELBO such an encoder's amortization gap partly measures that it was asked to do
something else. Every L is averaged over ``elbo_samples`` draws in float64. The best fully
factorized Gaussian under the ELBO is reported for every run as a signed yardstick.

Reference: Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders",
ICML, Sec. 3 and Table 1; Burda, Grosse & Salakhutdinov (2016), Eq. 8, for L_K.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from vaeinf.core import bounds
from vaeinf.core.methods import Method
from vaeinf.core.methods.base import GAUSSIAN, NO_FAMILY, chunking
from vaeinf.evaluation.likelihood import summary

Sampler = Callable[[dict[str, Tensor], int], tuple[Tensor, Tensor]]


@dataclasses.dataclass(frozen=True)
class QStarSettings:
    """max_steps: cap on Adam steps; lr: Adam's learning rate; samples: draws per step of the
    ELBO's gradient; window, tol: stop when the mean ELBO over the points, averaged over the
    last ``window`` steps, rose by less than tol * |mean ELBO| over the previous window;
    elbo_samples: draws per point when evaluating L[q]; select_samples: draws per point with
    which q* is chosen between Adam's optimum and its start (:func:`q_star`)."""

    max_steps: int = 300
    lr: float = 1e-2
    samples: int = 8
    window: int = 25
    tol: float = 1e-4
    elbo_samples: int = 500
    select_samples: int = 100

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


# -- the bounds and their per-point optimum -----------------------------------------------------


def _log_joint(model: Method, x: Tensor, z: Tensor) -> Tensor:
    """log p(x|z) + log p(z), (K, B)."""
    return model.decoder.log_prob(x, model.decoder(z)) + model.prior().log_prob(z)


def _grouped_bound(log_w: Tensor, K: int, objective="iwae") -> Tensor:
    """The mean over the G groups of K consecutive draws of the objective's K-sample value
    (:func:`vaeinf.core.bounds.bound`: "iwae" the L_K estimate, with K = 1 the ELBO), (G K, B)
    -> (B,)."""
    B = log_w.shape[-1]
    G = log_w.shape[0] // K
    groups = log_w.reshape(G, K, B).transpose(0, 1).reshape(K, G * B)  # (K, G B)
    return bounds.bound(groups, objective).reshape(G, B).mean(0)


def objective_name(objective) -> str:
    """The name of an objective given by name or as an object with a ``name``."""
    return getattr(objective, "name", objective)


def bound_name(K: int, objective="iwae") -> str:
    """``ELBO``, ``L_50``, ``MIWAE(2, 5)``, ``CIWAE(β = 0.05)``: the bound an objective
    (:func:`vaeinf.core.bounds.bound`) gives at K samples (PIWAE's, L_K, is its decoder's)."""
    name = objective_name(objective)
    if K == 1 or name == "elbo":
        return "ELBO"
    if name in ("iwae", "piwae"):
        return f"L_{K}"
    if name == "miwae":
        return f"MIWAE({objective.groups}, {K // objective.groups})"
    if name == "ciwae":
        return f"CIWAE(β = {objective.beta:g})"
    return f"the {name} objective at K = {K}"


def encoder_objective(objective):
    """The bound an objective trains the encoder on: itself, but PIWAE's encoder is trained on
    MIWAE with its groups (Rainforth et al. 2018, Sec. 4)."""
    if objective_name(objective) == "piwae":
        return dataclasses.replace(objective, name="miwae")
    return objective


@torch.no_grad()
def bound(
    model: Method,
    x: Tensor,
    n: int,
    memory_mb: float,
    sampler: Sampler | None = None,
    params: dict[str, Tensor] | None = None,
    K: int = 1,
    objective="iwae",
) -> Tensor:
    """Per-point L_K (N,) float64 (K = 1: the ELBO): the mean over floor(n / K) independent
    groups of K draws of log (1/K) sum_k w_k, w = p(x, z) / q(z) (Burda et al. 2015, Eq. 8); for
    another ``objective`` (:func:`vaeinf.core.bounds.bound`), its value on each group.

    With ``sampler``/``params``: q is that family member (params' leading dim N); otherwise q
    is the model's posterior q_phi (:meth:`Method.log_weights`). Points and draws are chunked
    (whole groups per chunk) as in :func:`vaeinf.evaluation.likelihood.log_weight_chunks`
    (bounded memory)."""
    groups = max(1, n // K)
    b, s = chunking(model, len(x), groups * K, memory_mb)
    s = max(K, s // K * K)
    out = torch.empty(len(x), dtype=torch.float64)
    for start in range(0, len(x), b):
        sl = slice(start, start + b)
        xb, total = x[sl], torch.zeros(len(x[sl]), dtype=torch.float64, device=x.device)
        for k0 in range(0, groups * K, s):
            k = min(s, groups * K - k0)
            if sampler is None:
                log_w = model.log_weights(xb, k)[0]
            else:
                z, log_q = sampler({key: v[sl] for key, v in params.items()}, k)
                log_w = _log_joint(model, xb, z) - log_q  # (k, b)
            total += _grouped_bound(log_w.double(), K, objective) * (k // K)
        out[sl] = (total / groups).cpu()
    return out


def elbo(model, x, n, memory_mb, sampler=None, params=None) -> Tensor:
    """Per-point ELBO (N,) float64, the average of log w over n draws: :func:`bound` at K = 1."""
    return bound(model, x, n, memory_mb, sampler, params, 1)


def optimize(
    model: Method,
    x: Tensor,
    start: dict[str, Tensor],
    sampler: Sampler,
    s: QStarSettings,
    K: int = 1,
    objective="iwae",
) -> tuple[dict[str, Tensor], dict]:
    """q* per point: Adam on the per-point parameters (one optimizer over (B, ...) tensors; the
    points do not interact, so the gradient of the batch sum is every point's own) ascending
    the L_K estimate (or ``objective``'s) of max(1, ``samples`` // K) groups of K draws (K = 1:
    the ``samples``-draw ELBO), from ``start``, until the windowed test of
    :class:`QStarSettings` holds or ``max_steps``. The model's parameters stay fixed (only the
    local parameters are differentiated). Returns the parameters and {steps, converged}."""
    params = {k: v.detach().clone().requires_grad_() for k, v in start.items()}
    leaves = list(params.values())
    m = [torch.zeros_like(p) for p in leaves]
    v = [torch.zeros_like(p) for p in leaves]
    trace: list[float] = []
    converged = False
    draws = max(1, s.samples // K) * K
    for step in range(1, s.max_steps + 1):
        with torch.enable_grad():
            z, log_q = sampler(params, draws)  # (G K, B, D), (G K, B)
            per_point = _grouped_bound(_log_joint(model, x, z) - log_q, K, objective)  # (B,)
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
    K: int = 1,
    objective="iwae",
) -> tuple[Tensor, dict]:
    """L_K[q*] per point (N,) (K = 1: the ELBO; or ``objective``'s value) for ``family``
    "own" (the posterior's per-point family, :meth:`Posterior.local_params`) or "gaussian" (the
    yardstick, from ``start`` or :func:`gaussian_start`), and a description of what was
    optimized.

    q* is the better, per point, of the optimum Adam reached and its start (so that it is
    never worse than the encoder's own member by the noise of the optimizer), chosen on
    ``s.select_samples`` draws each; the reported L_K[q*] comes from ``s.elbo_samples`` fresh
    draws, so the choice does not bias it."""
    t0 = time.perf_counter()
    if family == "own":
        with torch.no_grad():
            init = model.posterior.local_params(x)
        sampler, how = model.posterior.rsample_and_log_prob_local, "the encoder's output"
        kind = f"{type(model.posterior).__name__}'s per-point parameters ({', '.join(init)})"
    else:
        init, how = start or gaussian_start(model, x)
        sampler, kind = gaussian_sampler, "fully factorized Gaussian (mu, log sigma^2)"
    best, info = optimize(model, x, init, sampler, s, K, objective)
    n = s.select_samples
    at_start = bound(model, x, n, memory_mb, sampler, init, K, objective)
    at_best = bound(model, x, n, memory_mb, sampler, best, K, objective)
    keep = (~(at_best > at_start)).to(x.device)  # (N,): the start is no worse (or Adam's NaN)
    chosen = {
        k: torch.where(keep.view(-1, *[1] * (v.dim() - 1)), init[k].to(v.dtype), v)
        for k, v in best.items()
    }
    values = bound(model, x, s.elbo_samples, memory_mb, sampler, chosen, K, objective)
    info |= {
        "family": kind,
        "start": how,
        "bound": bound_name(K, objective),
        "kept_start": int(keep.sum()),
        "seconds": time.perf_counter() - t0,
    }
    return values, info


def _split(log_px: Tensor, l_star: Tensor, l_phi: Tensor) -> dict:
    """The approximation, amortization and inference gaps (Cremer et al. 2018, Eq. 2-3) per
    point, summarized: mean, standard error over points, n."""
    return {
        "approximation_gap": summary(log_px - l_star),
        "amortization_gap": summary(l_star - l_phi),
        "inference_gap": summary(log_px - l_phi),
    }


def negative(split: dict, where: str) -> list[str]:
    """The gaps of ``split`` whose mean is below -3 standard errors: ``where`` + the gap's
    name. Both gaps are non-negative by definition, so such a run is flagged."""
    return [
        f"{where} {name.replace('_', ' ')}"
        for name in ("approximation_gap", "amortization_gap")
        if split[name]["mean"] < -3 * split[name]["stderr"]
    ]


def gap_split(
    model: Method,
    x: Tensor,
    log_px: Tensor,
    s: QStarSettings,
    memory_mb: float = 512,
    K: int = 1,
    objective="iwae",
) -> dict:
    """Cremer et al. (2018)'s split of log p(x) - L[q_phi] on the points x (N, D_x), given
    per-point log p^(x) (N,) (the AIS estimate), under the ELBO (their definition) and under
    the bound the encoder was trained on, ``objective`` (:func:`vaeinf.core.bounds.bound`) at
    ``K`` samples, L_K for importance-weighted training; where that is the ELBO (K = 1 or the
    "elbo" objective) the two are the same and ``training_bound`` repeats the ELBO's split.

    L[q_phi]: the bound of the trained posterior; for a posterior without a density (AVB) the
    bound of a stand-in, the diagonal Gaussian with the moments of its samples (the adversary is
    not used). q* of the own family where the posterior has one (otherwise the diagonal
    Gaussian, said so under ``own_family``). The best diagonal Gaussian under the ELBO is
    reported beside it for every run, as a signed comparison with q_phi (``gaussian``): not an
    amortization gap, since a richer family can beat every Gaussian. Gaps per point, then
    summarized: approximation + amortization = log p^(x) - L[q_phi] holds per point and in the
    means. ``flags`` lists the gaps below -3 standard errors."""
    log_px = log_px.double().cpu()
    post = model.posterior
    g_start = gaussian_start(model, x)
    stand_in = not post.has_density
    if stand_in:
        phi_kind = (
            "the posterior has no density, so its bound is not defined: that of a stand-in, "
            f"the diagonal Gaussian with the {g_start[1]} (the adversary is not used)"
        )
    else:
        phi_kind = "the trained posterior q_phi(z|x)"

    def l_phi_at(k: int, obj="iwae") -> Tensor:
        if stand_in:
            return bound(model, x, s.elbo_samples, memory_mb, gaussian_sampler, g_start[0], k, obj)
        return bound(model, x, s.elbo_samples, memory_mb, K=k, objective=obj)

    def own_at(k: int, gauss, gauss_info, obj="iwae") -> tuple[Tensor, dict]:
        if post.family in (NO_FAMILY, GAUSSIAN) and gauss is not None:
            return gauss, dict(gauss_info)
        if post.family in (NO_FAMILY, GAUSSIAN):
            return q_star(model, x, "gaussian", s, memory_mb, g_start, k, obj)
        return q_star(model, x, "own", s, memory_mb, K=k, objective=obj)

    if post.family == NO_FAMILY:
        own_note = (
            f"{type(post).__name__} is implicit: it has samples but no density, hence no ELBO "
            "and no per-point parameters; every number of this split is that of the stand-in "
            "(the diagonal Gaussian with the moments of its samples), and q* is the best "
            "diagonal Gaussian"
            if stand_in
            else f"{type(post).__name__} has no per-point parameter family: the fully "
            "factorized Gaussian stands in for it"
        )
    elif post.family == GAUSSIAN:
        own_note = "the posterior's own family is the fully factorized Gaussian"
    else:
        own_note = "the posterior's own per-point family"

    l_phi = l_phi_at(1)
    gauss, gauss_info = q_star(model, x, "gaussian", s, memory_mb, g_start)
    own, own_info = own_at(1, gauss, gauss_info)
    elbo_split = _split(log_px, own, l_phi)
    out = {
        "n": len(x),
        "log_px": summary(log_px),
        "elbo_q_phi": summary(l_phi) | {"kind": phi_kind},
        "own_family": {
            "elbo_q_star": summary(own) | own_info,
            "note": own_note,
            "stand_in": stand_in,
            **elbo_split,
        },
        "gaussian": {
            "elbo_q_star": summary(gauss) | gauss_info,
            "approximation_gap": summary(log_px - gauss),
            "minus_q_phi": summary(gauss - l_phi),
            "note": "the best fully factorized Gaussian per point under the ELBO, L[q*_Gauss] "
            "- L[q_phi], signed: a yardstick, not an amortization gap (negative where the "
            "posterior's family beats every Gaussian)",
        },
        "settings": s.as_dict(),
        "per_point": {"log_px": log_px, "elbo_q_phi": l_phi, "own": own, "gaussian": gauss},
    }
    flags = negative(elbo_split, "ELBO")
    if bound_name(K, objective) != "ELBO":
        l_phi_k = l_phi_at(K, objective)
        own_k, own_k_info = own_at(K, None, None, objective)
        train_split = _split(log_px, own_k, l_phi_k)
        out["training_bound"] = {
            "bound": bound_name(K, objective),
            "K": K,
            "same_as_elbo": False,
            "q_phi": summary(l_phi_k),
            "q_star": summary(own_k) | own_k_info,
            **train_split,
        }
        out["per_point"] |= {"train_q_phi": l_phi_k, "train_own": own_k}
        flags += negative(train_split, bound_name(K, objective))
    else:
        out["training_bound"] = {
            "bound": "ELBO",
            "K": 1,
            "same_as_elbo": True,
            "q_phi": out["elbo_q_phi"],
            "q_star": out["own_family"]["elbo_q_star"],
            **elbo_split,
        }
    out["flags"] = flags
    out["flagged"] = bool(flags)
    return out
