"""Adversarial Variational Bayes (`avb`): an implicit posterior trained against an adversary.

Why: the encoder z = g(x, eps) has no tractable density, so an adversary T(x, z), trained with
the logistic loss, estimates log q(z|x) - log p(z) (its optimum, Proposition 1), and encoder and
decoder maximize E_q[log p(x|z) - T(x, z)], the ELBO with T in place of the KL term. Adaptive
contrast (on by default) lets T keep up with the encoder: T contrasts q with the Gaussian r of
q's moments, whose KL(r || p) is closed-form (:meth:`ImplicitPosterior.sample`). Reported
likelihoods never use T: evaluation importance-samples an explicit proposal fitted per point,
whose L_K is a bound whatever the proposal (Burda et al. 2015, Theorem 1).

Reference: Mescheder, Nowozin & Geiger (2017), "Adversarial Variational Bayes: Unifying
Variational Autoencoders and Generative Adversarial Networks", ICML, Sec. 3.1 and Algorithm 1;
adaptive contrast Sec. 4, Eq. 14-16.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaeinf.core.methods.base import Method, Posterior, check_finite, standard_normal_log_prob
from vaeinf.core.nets import ACTIVATIONS, mlp
from vaeinf.errors import DivergedObjective

#: Rows (samples x points) per chunk when fitting the evaluation proposal.
FIT_ROWS = 32768


class ImplicitEncoder(nn.Module):
    """z = g(x, eps): an MLP on (x, eps) whose first layer is split as W_x x + W_e eps + b, so
    x's part is computed once per point and broadcast over the K noise draws."""

    def __init__(self, dim: int, noise: int, latent: int, hidden: list[int], activation: str):
        super().__init__()
        self.noise = noise
        self.x_in = nn.Linear(dim, hidden[0])
        self.eps_in = nn.Linear(noise, hidden[0], bias=False)
        self.act = ACTIVATIONS[activation]()
        self.rest = mlp([*hidden, latent], activation)

    def forward(self, x: Tensor, K: int) -> Tensor:
        """K samples per point: x (B, D_x) -> z (K, B, D)."""
        a = self.x_in(x)  # (B, H)
        eps = torch.randn((K, len(x), self.noise), dtype=a.dtype, device=a.device)
        return self.rest(self.act(a + self.eps_in(eps)))  # (K, B, D)


class Adversary(nn.Module):
    """T(x, z): an MLP on (x, z) with the first layer split as W_x x + W_z z + b. x (B, D_x),
    z (K, B, D) -> (K, B)."""

    def __init__(self, dim: int, latent: int, hidden: list[int], activation: str):
        super().__init__()
        self.x_in = nn.Linear(dim, hidden[0])
        self.z_in = nn.Linear(latent, hidden[0], bias=False)
        self.act = ACTIVATIONS[activation]()
        self.rest = mlp([*hidden, 1], activation)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.rest(self.act(self.x_in(x) + self.z_in(z))).squeeze(-1)


def adversary_loss(t_q: Tensor, t_p: Tensor) -> Tensor:
    """The adversary's logistic objective (Mescheder et al. 2017, Sec. 3.1), negated, averaged:
    -log sigmoid(T_q) - log(1 - sigmoid(T_p)) = softplus(-T_q) + softplus(T_p)."""
    return F.softplus(-t_q).mean() + F.softplus(t_p).mean()


@functools.cache
def wishart_log_det_bias(N: int, D: int) -> float:
    """E[log det S^] - log det S for the sample covariance S^ of N Gaussian draws in D
    dimensions: sum_{i=1..D} digamma((N - i) / 2) + D log(2 / (N - 1)) (N > D; a diagonal S^
    has D times the bias of D = 1)."""
    i = torch.arange(1, D + 1, dtype=torch.float64)
    return (torch.special.digamma((N - i) / 2) + math.log(2 / (N - 1))).sum().item()


class ImplicitPosterior(Posterior):
    """AVB's q(z|x): samples only; :meth:`log_prob` raises, so the mutual information is
    recorded as null. The ``log q`` returned with the samples is the adversary's stand-in (see
    :meth:`sample`), used for training and labelled diagnostics, never for reported NLLs."""

    has_density = False

    def __init__(self, dim, latent, hidden, activation, options):
        super().__init__()
        self.adaptive_contrast = options.adaptive_contrast
        self.contrast_samples = options.contrast_samples or 2 * latent
        self.contrast_covariance = options.contrast_covariance
        self.encoder = ImplicitEncoder(dim, options.noise_dim or latent, latent, hidden, activation)
        self.adversary = Adversary(dim, latent, options.adversary_hidden or hidden, activation)

    def sample(self, x: Tensor, K: int) -> tuple[Tensor, Tensor, Tensor]:
        """z (K, B, D); u (N, B, D), what T sees of N >= K draws whose first K are z; and the
        stand-in for log q(z|x) (K, B).

        Plain AVB: N = K, u = z and the stand-in T(x, z) + log p(z), exact at T* (Proposition 1).
        Adaptive contrast (Mescheder et al. 2017, Sec. 4, Eq. 14-16): KL(q || p) = KL(q || r) +
        KL(r || p) for the Gaussian r(z|x) of q's mean m and covariance; T learns the first term
        from u = r-standardized z against N(0, I) draws, the second is closed-form, and the
        stand-in is log p(z) + T(x, u) + KL(r || p). r has q's full covariance and its moments
        come from all N = K + ``contrast_samples`` draws together: a diagonal r, or moments from
        separate draws with the pointwise log r, let the encoder outrun T (figures in the
        benchmark report).
        """
        if not self.adaptive_contrast:
            z = self.encoder(x, K)  # (K, B, D)
            return z, z, self.adversary(x, z) + standard_normal_log_prob(z)
        draws = self.encoder(x, K + self.contrast_samples)  # (N, B, D)
        m = draws.mean(0)  # (B, D)
        zc = draws - m  # (N, B, D)
        D = zc.shape[-1]
        if self.contrast_covariance == "full":
            # Sample covariance and its Cholesky factor in float64 (a thin q makes it
            # ill-conditioned), with a ridge of 1e-6 of its mean variance so that it exists.
            zd = zc.double()
            cov = torch.einsum("nbi,nbj->bij", zd, zd) / (len(zc) - 1)  # (B, D, D)
            ridge = 1e-6 * cov.diagonal(dim1=-2, dim2=-1).mean(-1) + 1e-12  # (B,)
            cov = cov + ridge[:, None, None] * torch.eye(D, dtype=cov.dtype, device=cov.device)
            chol = torch.linalg.cholesky(cov)  # (B, D, D)
            u = torch.linalg.solve_triangular(chol, zd.permute(1, 2, 0), upper=False)  # (B, D, N)
            u = u.permute(2, 0, 1).to(zc.dtype)  # (N, B, D)
            trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)  # (B,)
            log_det = 2 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)  # (B,)
        else:
            var = zc.pow(2).sum(0) / (len(zc) - 1) + 1e-8  # (B, D)
            u = zc * torch.rsqrt(var)  # (N, B, D)
            trace, log_det = var.sum(-1), torch.log(var).sum(-1)
        # KL(r || p) = (tr S + |m|^2 - D - log det S) / 2 with the finite-sample bias of the
        # estimates removed as for Gaussian draws: E|m^|^2 = |m|^2 + tr S / N, and
        # E log det S^ = log det S + sum_i digamma((N - i) / 2) + D log(2 / (N - 1)) (Wishart).
        N = len(zc)
        if self.contrast_covariance == "full":
            log_det = log_det - wishart_log_det_bias(N, D)
        else:
            log_det = log_det - D * wishart_log_det_bias(N, 1)
        kl_r = 0.5 * (trace * (1 - 1 / N) + (m * m).sum(-1) - D - log_det)  # (B,)
        kl_r = kl_r.to(zc.dtype)
        z = draws[:K]
        return z, u, self.adversary(x, u[:K]) + standard_normal_log_prob(z) + kl_r

    def rsample_and_log_prob(self, x, K, stop_param_grad=False):
        if stop_param_grad:
            raise NotImplementedError("AVB supports the standard estimator only")
        z, _, log_q = self.sample(x, K)
        return z, log_q

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError(
            "AVB's implicit posterior has no density (the adversary T estimates a log density "
            "ratio but is not a density), so log q(z|x) at a given z is not available"
        )

    @torch.no_grad()
    def rsample(self, x: Tensor, K: int) -> Tensor:
        """K samples z (K, B, D) of the implicit posterior, without the adversary."""
        return self.encoder(x, K)


class AVB(Method):
    """`avb`: Adversarial Variational Bayes (Mescheder et al. 2017) with an explicit Gaussian
    proposal for evaluation."""

    name = "avb"
    default_objective = "elbo"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        o = self.options
        scales = ", ".join(f"{c:g}" for c in o.proposal_scales)
        self.proposal = (
            f"Gaussian ({o.proposal_covariance} covariance) fitted per test point to "
            f"{o.proposal_samples} samples of the implicit posterior, standard deviations "
            f"multiplied by {scales} (equal-weight mixture)"
            + (
                f", in a defensive mixture with weight {o.proposal_prior_weight:g} on p(z) "
                "(deterministic: that share of every K samples, rounded down, from p(z))"
                if o.proposal_prior_weight > 0
                else ""
            )
        )

    @property
    def eval_bytes_per_sample(self) -> int:
        """Per (sample, point) row: z, the standardized noise and the matmul's temporaries."""
        return 4 * 8 * self.latent

    #: The proposal is a deterministic mixture over blocks of samples, so every L_K of the
    #: bound curve takes its own draws in blocks of K (see :meth:`eval_log_weights`).
    stratified_proposal = True

    def build_posterior(self, dim, latent, hidden, activation):
        return ImplicitPosterior(dim, latent, hidden, activation, self.options)

    # -- training: two players (Mescheder et al. 2017, Algorithm 1) ------------------------
    def make_optimizers(self, lr, betas, eps):
        """[encoder + decoder Adam (follows the schedule), adversary Adam (its own settings)],
        fused where the parameters allow, as :meth:`Method.make_optimizers`."""
        adversary = list(self.posterior.adversary.parameters())
        ids = {id(p) for p in adversary}
        main = [p for p in self.parameters() if id(p) not in ids]
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters()) or None
        o = self.options
        return [
            torch.optim.Adam(main, lr=lr, betas=tuple(betas), eps=eps, fused=fused),
            torch.optim.Adam(
                adversary, lr=o.adversary_lr, betas=tuple(o.adversary_betas), eps=eps, fused=fused
            ),
        ]

    def train_step(self, x, K, estimator, optimizers):
        """One simultaneous step of both players on the batch x (B, D_x).

        Encoder/decoder: ascend the K-sample average of log p(x|z) + log p(z) - [stand-in
        log q] (:meth:`ImplicitPosterior.sample`). Adversary: descend the logistic loss on what
        T sees of the same K posterior samples (detached) against as many N(0, I) draws.
        Returns the batch's T-based objective per point (a training signal, not a bound).
        ``train.compile`` does not apply to this two-player step.
        """
        opt_main, opt_adv = optimizers
        z, u, log_q = self.posterior.sample(x, K)  # (K, B, D), (N, B, D), (K, B)
        log_px = self.decoder.log_prob(x, self.decoder(z))  # (K, B)
        bound = (log_px + standard_normal_log_prob(z) - log_q).mean(0)  # (B,)
        main_loss = -bound.mean()
        u = u.detach()
        adv_loss = adversary_loss(
            self.posterior.adversary(x, u), self.posterior.adversary(x, torch.randn_like(u))
        )
        check_finite(main_loss)
        check_finite(adv_loss)
        opt_main.zero_grad(set_to_none=True)
        main_loss.backward()
        opt_adv.zero_grad(set_to_none=True)  # drop what main_loss left on T's parameters
        adv_loss.backward()
        opt_main.step()
        opt_adv.step()
        return bound.detach()

    def gradient_groups(self) -> dict[str, list[str]]:
        """The encoder's (the implicit posterior's generator) and the decoder's parameters: the
        adversary T follows a gradient of its own (:func:`adversary_loss`), so the gradient
        whose signal-to-noise ratio is measured, :meth:`Method.training_loss`'s (the main
        loss of :meth:`train_step`), is not the one T trains on."""
        groups = super().gradient_groups()
        groups["encoder"] = [
            n for n in groups["encoder"] if not n.startswith("posterior.adversary.")
        ]
        return groups

    def check_epoch(self, train_objective: float, val_LK: float, K: int) -> None:
        """Stop when the T-based objective cannot be an ELBO: above 0, where log p(x) <= 0 for
        binary data; or above the validation L_K of the explicit proposal, a bound, by more
        than ``divergence_tolerance`` times |L_K| (a healthy run differs by the
        generalization gap and L_K - ELBO, both of the other sign or small). Either means the
        encoder is exploiting T."""
        tol = self.options.divergence_tolerance
        numbers = f"T-based training objective {train_objective:.6g} nats, validation L_{K} "
        numbers += f"{val_LK:.6g} nats (explicit proposal)"
        if train_objective > 0:
            raise DivergedObjective(f"{numbers}: the objective is > 0, above any log p(x)")
        if tol is not None and train_objective > val_LK + tol * abs(val_LK):
            raise DivergedObjective(
                f"{numbers}: the objective exceeds L_{K} by more than {tol:g} |L_{K}|"
            )

    # -- evaluation: an explicit proposal ----------------------------------------------------
    @torch.no_grad()
    def fit_proposal(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per point, the mean m (B, D) and the lower Cholesky factor L (B, D, D) of the sample
        covariance S of ``proposal_samples`` draws of the implicit posterior (diagonal when
        ``proposal_covariance`` is "diag"). S gets a small ridge (1e-3 of its mean variance, plus
        1e-8) so that L always exists. Draws are made in chunks of points (bounded memory)."""
        o = self.options
        M = o.proposal_samples
        locs, chols = [], []
        for xb in x.split(max(1, FIT_ROWS // M)):
            z = self.posterior.encoder(xb, M)  # (M, b, D)
            m = z.mean(0)  # (b, D)
            zc = z - m
            if o.proposal_covariance == "full":
                cov = torch.einsum("mbi,mbj->bij", zc, zc) / (M - 1)  # (b, D, D)
            else:
                cov = torch.diag_embed(zc.pow(2).sum(0) / (M - 1))
            ridge = 1e-3 * cov.diagonal(dim1=-2, dim2=-1).mean(-1) + 1e-8  # (b,)
            eye = torch.eye(self.latent, dtype=cov.dtype, device=cov.device)
            cov = cov + ridge[:, None, None] * eye
            locs.append(m)
            chols.append(torch.linalg.cholesky(cov.double()).to(cov.dtype))
        return torch.cat(locs), torch.cat(chols)

    @torch.no_grad()
    def eval_log_weights(self, x: Tensor, K: int, block: int | None = None) -> Tensor:
        """log w = log p(x|z) + log p(z) - log r(z|x), (K, B): importance sampling from the
        explicit proposal r = sum_j a_j N(m, c_j^2 S) + a_0 N(0, I) of :meth:`fit_proposal`,
        whose density is exact, as a deterministic mixture (Owen & Zhou 2000, "Safe and
        effective importance sampling", Sec. 3): in every block of ``block`` consecutive
        samples (default: all K; K must be a multiple), floor(alpha * block) come from the prior
        and the rest from the Gaussians in turn, and the a_j are those counts over the block, so
        each block's mean weight is an unbiased estimate of p(x) given the fit.

        Why counts rather than random components: a random prior draw drags a small-K bound far
        below the Gaussian's own (figures in the benchmark report); with counts a block below
        1 / alpha samples is the Gaussian alone, and the prior enters where its price is at most
        -log(1 - alpha) nats."""
        block = block or K
        if K % block:
            raise ValueError(f"K = {K} is not a multiple of the block of {block} samples")
        o = self.options
        c = torch.tensor(o.proposal_scales, dtype=x.dtype, device=x.device)  # (J,)
        J = len(c)
        n_prior = math.floor(o.proposal_prior_weight * block)
        pos = torch.arange(block, device=x.device)
        comp_block = torch.where(pos < block - n_prior, pos % J, J)  # (block,): J is the prior
        log_mix = torch.log(torch.bincount(comp_block, minlength=J + 1) / block)  # (J + 1,)
        comp = comp_block.repeat(K // block)  # (K,)
        loc, chol = self.fit_proposal(x)  # (B, D), (B, D, D)
        D = loc.shape[-1]
        eps = torch.randn((K, *loc.shape), dtype=loc.dtype, device=loc.device)  # (K, B, D)
        scale = torch.cat([c, c.new_ones(1)])[comp].view(K, 1, 1)  # (K, 1, 1)
        z = loc + scale * (chol @ eps.unsqueeze(-1)).squeeze(-1)  # (K, B, D)
        if n_prior:
            z = torch.where((comp == J).view(K, 1, 1), eps, z)
        u = torch.linalg.solve_triangular(chol, (z - loc).permute(1, 2, 0), upper=False)
        u_sq = u.pow(2).sum(1).T  # (K, B), |L^-1 (z - m)|^2
        log_det = torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)  # (B,)
        log_gauss = (
            -0.5 * u_sq.unsqueeze(-1) / c**2
            - D * torch.log(c)
            - log_det[:, None]
            - 0.5 * D * math.log(2 * math.pi)
        )  # (K, B, J)
        log_r = torch.logsumexp(log_gauss + log_mix[:J], -1)  # (K, B); empty scales are -inf
        if n_prior:
            log_r = torch.logaddexp(log_r, log_mix[J] + standard_normal_log_prob(z))
        log_px = self.decoder.log_prob(x, self.decoder(z))  # (K, B)
        return log_px + standard_normal_log_prob(z) - log_r

    @torch.no_grad()
    def extra_metrics(self, x: Tensor, K: int) -> dict:
        """AVB's own training objective on the test set, labelled as such: it uses T in place of
        log q - log p, so it is an estimate, not a bound, and is not the reported NLL."""
        vals = [self.log_weights(xb, K)[0].mean(0) for xb in x.split(max(1, 20000 // K))]
        v = torch.cat(vals).double()
        return {
            "avb_adversary_objective": {
                "mean": v.mean().item(),
                "stderr": (v.std() / math.sqrt(len(v))).item(),
                "K": K,
                "n": len(v),
                "note": "E_q[log p(x|z) - T(x, z)] (Mescheder et al. 2017, Sec. 3.1): the ELBO "
                "with the adversary T standing in for log q(z|x) - log p(z); an estimate, not a "
                "bound, and not used for test_nll",
            }
        }
