"""Normalizing-flow posterior: a diagonal Gaussian followed by planar or radial flows (`flow`).

Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML: z_0 ~ q_0(z|x) =
N(mu(x), diag sigma(x)^2) is pushed through T invertible maps z_t = f_t(z_{t-1}), and

    log q_T(z_T|x) = log q_0(z_0|x) - sum_t log |det df_t/dz_{t-1}|      (their Eq. 13).

The flow parameters are amortized: the encoder outputs them from x together with (mu, sigma), as
in van den Berg et al. (2018), "Sylvester Normalizing Flows for Variational Inference", UAI, so
every data point has its own flow. Both flow families keep their parameters in the range where
the map is invertible (Rezende & Mohamed 2015, Appendix A.1 and A.2) for any raw encoder output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeinf.core.methods.base import (
    Method,
    Posterior,
    chunked_over_samples,
    gaussian_log_prob,
    gaussian_rsample,
)
from vaeinf.core.nets import mlp

# ---------------------------------------------------------------------------------------------
# Planar flow: f(z) = z + u_hat h(w^T z + b), h = tanh (Rezende & Mohamed 2015, Eq. 10).


def planar_u_hat(u: Tensor, w: Tensor) -> Tensor:
    """u_hat = u + (m(w^T u) - w^T u) w / ||w||^2 with m(a) = -1 + softplus(a).

    Rezende & Mohamed (2015), Appendix A.1: then w^T u_hat = m(w^T u) > -1, which makes the planar
    map invertible for h = tanh. Note the *squared* norm. u, w: (..., D) -> (..., D).
    """
    wu = (w * u).sum(-1, keepdim=True)  # (..., 1)
    w_sq = (w * w).sum(-1, keepdim=True).clamp_min(1e-12)  # guards only w == 0 exactly
    return u + (-1.0 + F.softplus(wu) - wu) * w / w_sq


def planar_step(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """One planar step on z (K, B, D) with per-point u, w (B, D), b (B,).

    Returns f(z) (K, B, D) and log |det df/dz| = log |1 + u_hat^T psi(z)| (K, B), with
    psi(z) = h'(w^T z + b) w (Eqs. 11-12). Since w^T u_hat = m(w^T u) = -1 + softplus(w^T u), the
    determinant is written as

        1 + h'(a) m = tanh(a)^2 + (1 - tanh(a)^2) softplus(w^T u),   a = w^T z + b,

    a sum of two non-negative terms with no cancellation, so it stays accurate (and the log
    finite) even for adversarial parameters where w^T u_hat is within rounding of -1.
    """
    u_hat = planar_u_hat(u, w)  # (B, D)
    a = (z * w).sum(-1) + b  # (K, B)
    t = torch.tanh(a)  # (K, B)
    z_new = z + u_hat * t.unsqueeze(-1)  # (K, B, D)
    t2 = t * t
    det = t2 + (1.0 - t2) * F.softplus((w * u).sum(-1))  # (K, B)
    return z_new, torch.log(det.clamp_min(torch.finfo(det.dtype).tiny))


#: The most safeguarded Newton iterations of :func:`planar_inverse` (60 bisections alone would
#: narrow the bracket by 2^-60).
PLANAR_INVERSE_ITERATIONS = 60


def planar_inverse(y: Tensor, u: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """The inverse of :func:`planar_step` at y (K, B, D), to float64 precision.

    With a = w^T z and c = w^T u_hat = m(w^T u) > -1, w^T y = a + c tanh(a + b), whose right side
    is strictly increasing in a (derivative 1 + c (1 - tanh^2) >= min(1, 1 + c) > 0), so a is its
    unique root, which lies within |c| of s = w^T y; then z = y - u_hat tanh(a + b) (Rezende &
    Mohamed 2015, Appendix A.1). The root is found by Newton's method kept inside a bracket that
    it shrinks (a step leaving the bracket is replaced by bisection), in float64, for every row
    at once until every row has converged (at most :data:`PLANAR_INVERSE_ITERATIONS` steps).
    """
    dtype = y.dtype
    y, u, w, b = y.double(), u.double(), w.double(), b.double()
    u_hat = planar_u_hat(u, w)  # (B, D)
    c = (w * u_hat).sum(-1)  # (B,)
    s = (y * w).sum(-1)  # (K, B)
    lo, hi = s - c.abs(), s + c.abs()
    a = s.clone()
    for _ in range(PLANAR_INVERSE_ITERATIONS):
        t = torch.tanh(a + b)
        g = a + c * t - s  # increasing in a
        lo, hi = torch.where(g < 0, a, lo), torch.where(g > 0, a, hi)
        newton = a - g / (1 + c * (1 - t * t))
        inside = (newton > lo) & (newton < hi)
        step = torch.where(inside, newton, 0.5 * (lo + hi)) - a
        a = a + step
        if (step.abs() <= 1e-13 * (1 + a.abs())).all():  # every row converged
            break
    return (y - u_hat * torch.tanh(a + b).unsqueeze(-1)).to(dtype)


# ---------------------------------------------------------------------------------------------
# Radial flow: f(z) = z + beta h(alpha, r) (z - z0), h = 1 / (alpha + r), r = |z - z0| (Eq. 14).


def radial_params(alpha_raw: Tensor, beta_raw: Tensor) -> tuple[Tensor, Tensor]:
    """alpha = softplus(alpha_raw) > 0 and beta = -alpha + softplus(beta_raw) >= -alpha, the
    invertibility condition of Rezende & Mohamed (2015), Appendix A.2."""
    alpha = F.softplus(alpha_raw)
    return alpha, -alpha + F.softplus(beta_raw)


def radial_step(
    z: Tensor, z0: Tensor, alpha_raw: Tensor, beta_raw: Tensor
) -> tuple[Tensor, Tensor]:
    """One radial step on z (K, B, D) with per-point centre z0 (B, D) and raw alpha, beta (B,).

    log |det| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r) (Rezende & Mohamed 2015,
    Sec. 4.1), written with s = softplus(beta_raw) = alpha + beta as
    (D - 1) log((r + s) / (alpha + r)) + log((r^2 + 2 alpha r + alpha s) / (alpha + r)^2),
    whose arguments are non-negative by construction.
    """
    D = z.shape[-1]
    alpha = F.softplus(alpha_raw).unsqueeze(-1)  # (B, 1)
    s = F.softplus(beta_raw).unsqueeze(-1)  # (B, 1), = alpha + beta
    beta = s - alpha
    diff = z - z0  # (K, B, D)
    r = diff.norm(dim=-1, keepdim=True)  # (K, B, 1)
    z_new = z + beta / (alpha + r) * diff
    tiny = torch.finfo(z.dtype).tiny
    log_det = (
        (D - 1) * (torch.log((r + s).clamp_min(tiny)) - torch.log(alpha + r))
        + torch.log((r * r + 2 * alpha * r + alpha * s).clamp_min(tiny))
        - 2 * torch.log(alpha + r)
    )
    return z_new, log_det.squeeze(-1)  # (K, B, D), (K, B)


def radial_inverse(y: Tensor, z0: Tensor, alpha_raw: Tensor, beta_raw: Tensor) -> Tensor:
    """The inverse of :func:`radial_step`, in closed form.

    |y - z0| = r (r + s) / (alpha + r) for r = |z - z0|, so r is the positive root of
    r^2 + (s - r_y) r - alpha r_y = 0, and z = z0 + (y - z0) (alpha + r) / (r + s).
    """
    alpha = F.softplus(alpha_raw).unsqueeze(-1)  # (B, 1)
    s = F.softplus(beta_raw).unsqueeze(-1)
    diff = y - z0  # (K, B, D)
    r_y = diff.norm(dim=-1, keepdim=True)  # (K, B, 1)
    c = s - r_y
    disc = torch.sqrt(c * c + 4 * alpha * r_y)
    # The positive root, in the form that avoids cancellation for either sign of c.
    r = torch.where(c > 0, 2 * alpha * r_y / (c + disc).clamp_min(1e-30), (disc - c) / 2)
    return z0 + diff * (alpha + r) / (r + s).clamp_min(1e-30)


# ---------------------------------------------------------------------------------------------


class FlowPosterior(Posterior):
    """q_T(z|x): N(mu(x), diag sigma(x)^2) pushed through ``steps`` planar or radial flows whose
    parameters the encoder outputs from x.

    Encoder: an MLP x -> h (B, H), then one linear head for (mu, log sigma^2) and one for all flow
    parameters: per planar step u, w (D each) and b (1); per radial step z0 (D), alpha, beta.
    """

    family = "Gaussian through amortized planar or radial flows"

    def __init__(
        self, dim: int, latent: int, hidden: list[int], activation: str, flow: str, steps: int
    ):
        super().__init__()
        self.flow, self.steps, self.latent = flow, steps, latent
        per_step = 2 * latent + 1 if flow == "planar" else latent + 2
        self.features = mlp([dim, *hidden], activation, final_activation=True)
        self.base_head = nn.Linear(hidden[-1], 2 * latent)
        self.flow_head = nn.Linear(hidden[-1], steps * per_step)

    def local_params(self, x: Tensor) -> dict[str, Tensor]:
        """The encoder's per-point outputs, the amortized family of this posterior: base
        (mu, log sigma^2) (B, 2D) and all raw flow parameters (B, steps * per_step)."""
        h = self.features(x)  # (B, H)
        return {"base": self.base_head(h), "flow": self.flow_head(h)}

    def _unpack(self, params: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[tuple]]:
        """mu, log sigma (B, D) and, per step, the raw flow parameters of each data point."""
        mu, log_var = params["base"].chunk(2, dim=-1)
        raw = params["flow"].unflatten(-1, (self.steps, -1))  # (B, T, per_step)
        D = self.latent
        steps = []
        for t in range(self.steps):
            p = raw[:, t]  # (B, per_step)
            if self.flow == "planar":
                steps.append((p[:, :D], p[:, D : 2 * D], p[:, 2 * D]))  # u, w, b
            else:
                steps.append((p[:, :D], p[:, D], p[:, D + 1]))  # z0, alpha_raw, beta_raw
        return mu, 0.5 * log_var, steps

    def params(self, x: Tensor) -> tuple[Tensor, Tensor, list[tuple[Tensor, ...]]]:
        """mu, log sigma (B, D) and, per step, the raw flow parameters of each data point."""
        return self._unpack(self.local_params(x))

    def _step(self, z: Tensor, p: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        return planar_step(z, *p) if self.flow == "planar" else radial_step(z, *p)

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """log q_T(z|x) at given z (K, B, D) by inverting the steps (Eq. 13): radial steps in
        closed form (:func:`radial_inverse`), planar ones by a bracketed root-finder along w
        (:func:`planar_inverse`). Samples are processed in chunks (bounded memory)."""
        mu, log_sigma, steps = self.params(x)
        return chunked_over_samples(lambda zc: self._log_prob(zc, mu, log_sigma, steps), z)

    def _log_prob(self, z, mu, log_sigma, steps) -> Tensor:
        inverse = planar_inverse if self.flow == "planar" else radial_inverse
        log_det_sum = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)  # (k, B)
        for p in reversed(steps):
            z_prev = inverse(z, *p)
            log_det_sum = log_det_sum + self._step(z_prev, p)[1]
            z = z_prev
        return gaussian_log_prob(z, mu, log_sigma) - log_det_sum

    def rsample_and_log_prob_local(self, params: dict[str, Tensor], K: int):
        """z (K, B, D) and log q_T(z|x) (K, B) from the per-point parameters (Eq. 13)."""
        mu, log_sigma, steps = self._unpack(params)
        z, log_q = gaussian_rsample(mu, log_sigma, K)  # z_0 (K, B, D), log q_0(z_0|x) (K, B)
        for p in steps:
            z, log_det = self._step(z, p)
            log_q = log_q - log_det  # Eq. 13
        return z, log_q


class FlowMethod(Method):
    """`flow`: the planar/radial normalizing-flow posterior (Rezende & Mohamed 2015), trained on
    L_K by default (``method_options.objective``)."""

    name = "flow"

    @property
    def eval_bytes_per_sample(self) -> int:
        """A few D-vectors per (sample, point) row and flow step."""
        return 4 * self.options.steps * 4 * self.latent

    def build_posterior(self, dim, latent, hidden, activation):
        o = self.options
        return FlowPosterior(dim, latent, hidden, activation, o.flow, o.steps)
