"""The contract every inference method meets, and the shared model around it.

A method is a posterior family q(z|x) (a :class:`Posterior`) plus a training objective. The
Bernoulli decoder p(x|z) and the N(0, I) prior are shared by all methods, so everything above
:meth:`Method.log_weights` -- objectives, gradient estimators, evaluation -- is method-agnostic.
A method that trains differently (AVB's adversary, SA-VAE's inner loop) overrides one hook
(:meth:`Method.train_step` or :meth:`Posterior.rsample_and_log_prob`), never the training loop.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor, nn

from vaeinf import bounds
from vaeinf.config import ConfigError, RunConfig, from_dict
from vaeinf.nets import BernoulliDecoder, standard_normal


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class DivergedObjective(NonFiniteLoss):
    """An epoch's training objective left the range a bound on log p(x) can have (see
    :meth:`Method.check_epoch`); stops training like a non-finite loss."""


@dataclasses.dataclass
class NoOptions:
    """A method without options of its own."""


class Posterior(nn.Module):
    """q(z|x). Subclasses implement :meth:`rsample_and_log_prob`; the rest has generic defaults.

    Shapes: x (B, D_x); z (K, B, D) with the sample dimension first; log-densities (K, B).
    """

    #: True when log q(z|x) can be evaluated with the variational parameters detached, which the
    #: path-derivative estimators STL (Roeder et al. 2017) and DReG (Tucker et al. 2018) need.
    path_gradient: ClassVar[bool] = False
    #: True when log q is an exact density of the samples (False for AVB's implicit posterior).
    has_density: ClassVar[bool] = True

    def rsample_and_log_prob(
        self, x: Tensor, K: int, stop_param_grad: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized z of shape (K, B, D) and log q(z|x) of shape (K, B).

        With ``stop_param_grad``, log q is evaluated with the variational parameters detached
        (only the path through z carries gradient), as STL/DReG require.
        """
        raise NotImplementedError

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """log q(z|x) at given z (K, B, D) -> (K, B), x broadcast over K. Optional."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form log q(z|x) at given z")

    @torch.no_grad()
    def mean(self, x: Tensor, n: int = 100) -> Tensor:
        """E_q[z|x] of shape (B, D); Monte Carlo over ``n`` samples unless overridden."""
        z, _ = self.rsample_and_log_prob(x, n)
        return z.mean(0)

    @torch.no_grad()
    def dim_kl(self, x: Tensor, n: int = 100) -> Tensor:
        """Per-dimension KL(q(z_i|x) || N(0, 1)), shape (B, D).

        Default: the marginals q(z_i|x) are not available in closed form, so each is replaced by
        the Gaussian with the same mean and variance, estimated from ``n`` samples. That Gaussian
        KL is a moment-matched approximation, reported as such by the evaluator.
        """
        z, _ = self.rsample_and_log_prob(x, n)  # (n, B, D)
        m, v = z.mean(0), z.var(0).clamp_min(1e-12)
        return 0.5 * (v + m**2 - 1 - torch.log(v))

    #: How :meth:`dim_kl` is computed, recorded in metrics.json.
    dim_kl_kind: ClassVar[str] = "moment-matched Gaussian marginals (Monte Carlo)"


class Method(nn.Module):
    """Shared model: ``posterior`` q(z|x), ``decoder`` p(x|z), prior p(z) = N(0, I).

    Subclasses set ``name``, ``objective`` ("elbo" or "iwae"), ``Options`` (a dataclass of their
    ``method_options``) and build their posterior in :meth:`build_posterior`.
    """

    name: ClassVar[str] = ""
    objective: ClassVar[str] = "iwae"
    Options: ClassVar[type] = NoOptions
    #: The encoder gradient estimators this method supports (see :func:`vaeinf.bounds.loss`).
    estimators: ClassVar[tuple[str, ...]] = ("standard",)

    def __init__(self, cfg: RunConfig, dim: int, train_mean: Tensor):
        super().__init__()
        m = cfg.model.resolved()
        self.cfg = cfg
        self.dim, self.latent = dim, m.latent
        self.options = from_dict(self.Options, cfg.method_options, prefix="method_options")
        self.posterior = self.build_posterior(dim, m.latent, m.hidden, m.activation)
        self.decoder = BernoulliDecoder(m.latent, m.hidden[::-1], dim, m.activation, train_mean)

    # -- configuration ---------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: RunConfig) -> None:
        """Validate ``method_options`` and the estimator for this method (ConfigError)."""
        from_dict(cls.Options, cfg.method_options, prefix="method_options")
        if cfg.estimator not in cls.estimators:
            raise ConfigError(
                f"config key 'estimator': {cfg.estimator!r} is not available for method "
                f"{cls.name!r}; allowed: {', '.join(cls.estimators)}"
            )

    def build_posterior(
        self, dim: int, latent: int, hidden: list[int], activation: str
    ) -> Posterior:
        raise NotImplementedError

    # -- the log-weight contract -----------------------------------------------------------
    def prior(self) -> torch.distributions.Distribution:
        return standard_normal(self.latent, device=self.decoder.net[-1].bias.device)

    def log_weights(
        self, x: Tensor, K: int, stop_param_grad: bool = False
    ) -> tuple[Tensor, Tensor]:
        """log w = log p(x|z) + log p(z) - log q(z|x), shape (K, B), and z (K, B, D).

        The decoder is called once on all K*B samples (no loop over K).
        """
        z, log_q = self.posterior.rsample_and_log_prob(x, K, stop_param_grad)  # (K,B,D), (K,B)
        logits = self.decoder(z)  # (K, B, D_x)
        log_px = self.decoder.log_prob(x, logits)  # (K, B)
        return log_px + self.prior().log_prob(z) - log_q, z

    @torch.no_grad()
    def eval_log_weights(self, x: Tensor, K: int) -> Tensor:
        """Log importance weights for evaluation, (K, B). Methods without a density override
        this with an explicit proposal; for the rest it is :meth:`log_weights`."""
        return self.log_weights(x, K)[0]

    #: What :meth:`eval_log_weights` samples from, recorded in metrics.json.
    proposal: ClassVar[str] = "the posterior q(z|x) itself"

    # -- training hooks --------------------------------------------------------------------
    def make_optimizers(self, lr: float, betas: list[float], eps: float) -> list:
        """Optimizers; the first one's learning rate follows the schedule.

        Adam uses its fused kernel (one pass per parameter instead of a dozen small ops; the
        same update up to float rounding) on CPU and CUDA: about 10% off the K = 1 IWAE step
        on 2 CPU threads (``python -m vaeinf.bench``).
        """
        params = list(self.parameters())
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        return [torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, fused=fused)]

    def training_loss(self, x: Tensor, K: int, estimator: str) -> tuple[Tensor, Tensor]:
        """(loss to minimise, per-point bound (B,)) for one batch: :func:`vaeinf.bounds.loss`
        on this method's objective, compiled when ``train.compile`` is set."""
        loss_fn = bounds.compiled_loss() if self.cfg.train.compile else bounds.loss
        return loss_fn(self, x, K, self.objective, estimator)

    def check_epoch(self, train_objective: float, val_LK: float) -> None:
        """Called by the training loop after every epoch, before its checkpoint, with the
        epoch's mean training objective and the validation L_K; raises
        :class:`DivergedObjective` when they show that training has gone wrong. The objectives
        of the methods with a density are bounds by construction: nothing to check."""

    def train_step(self, x: Tensor, K: int, estimator: str, optimizers: list) -> Tensor:
        """One gradient step on the batch x (B, D_x); returns the batch's mean bound (detached).

        Raises :class:`NonFiniteLoss` before stepping when the loss is NaN or inf.
        """
        loss, bound = self.training_loss(x, K, estimator)
        check_finite(loss)
        opt = optimizers[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return bound.detach()


def check_finite(loss: Tensor) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLoss(f"loss is {loss.item()}")
