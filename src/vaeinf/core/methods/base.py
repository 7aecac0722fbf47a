"""The contract every inference method meets, and the shared model around it.

A method is a posterior family q(z|x) (a :class:`Posterior`) plus a training objective. The
Bernoulli decoder p(x|z) and the N(0, I) prior are shared by all methods, so everything above
:meth:`Method.log_weights` -- objectives, gradient estimators, evaluation -- is method-agnostic.
A method that trains differently (AVB's adversary, SA-VAE's inner loop) overrides one hook
(:meth:`Method.train_step` or :meth:`Method.training_loss`), never the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from vaeinf.config import ModelConfig
from vaeinf.core import bounds
from vaeinf.core.nets import BernoulliDecoder, standard_normal
from vaeinf.errors import NonFiniteLoss

#: Rows (samples x points) per chunk of a posterior's log q(z|x) at given z (bounded memory).
LOG_PROB_ROWS = 65536

#: :attr:`Posterior.family` of a diagonal Gaussian with per-point parameters mu, log_var (B, D).
GAUSSIAN = "diagonal Gaussian"
#: :attr:`Posterior.family` of a posterior without per-point parameters.
NO_FAMILY = "none"


# ---------------------------------------------------------------------------------------------
# The diagonal-Gaussian toolkit every posterior family builds on (the base distribution of the
# flows, the Gaussian of vae/iwae/semi_amortized, AVB's contrast distribution).


def standard_normal_log_prob(eps: Tensor) -> Tensor:
    """log N(eps; 0, I) over the last dimension: (..., D) -> (...)."""
    return -0.5 * (eps * eps).sum(-1) - 0.5 * eps.shape[-1] * math.log(2 * math.pi)


def gaussian_rsample(mu: Tensor, log_sigma: Tensor, K: int) -> tuple[Tensor, Tensor]:
    """z = mu + sigma * eps, eps ~ N(0, I), of shape (K, B, D) for mu, log sigma (B, D), and
    log N(z; mu, diag sigma^2) of shape (K, B), computed from eps (no division by sigma)."""
    eps = torch.randn((K, *mu.shape), dtype=mu.dtype, device=mu.device)  # (K, B, D)
    z = mu + torch.exp(log_sigma) * eps
    return z, standard_normal_log_prob(eps) - log_sigma.sum(-1)


def gaussian_log_prob(z: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """log N(z; mu, diag sigma^2): z (K, B, D), mu and log sigma (B, D) -> (K, B)."""
    return standard_normal_log_prob((z - mu) * torch.exp(-log_sigma)) - log_sigma.sum(-1)


def chunked_over_samples(fn: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """fn(z) for z (K, B, D) -> (K, B), in chunks of samples of at most ``LOG_PROB_ROWS`` rows,
    for log densities whose inverse pass holds several (K, B, D) temporaries."""
    chunk = max(1, LOG_PROB_ROWS // max(1, z.shape[1]))
    return torch.cat([fn(zc) for zc in z.split(chunk)])


class Posterior(nn.Module):
    """q(z|x). Subclasses implement :meth:`rsample_and_log_prob`, or :meth:`local_params` and
    :meth:`rsample_and_log_prob_local` (a diagonal Gaussian family only the former); the rest
    has generic defaults.

    Shapes: x (B, D_x); z (K, B, D) with the sample dimension first; log-densities (K, B).
    """

    #: True when log q is an exact density of the samples (False for AVB's implicit posterior).
    has_density: ClassVar[bool] = True

    #: The per-point family of :meth:`local_params` (over which q* is optimized): ``GAUSSIAN``
    #: for the diagonal Gaussian (mu, log sigma^2), ``NO_FAMILY`` when there is none.
    family: ClassVar[str] = NO_FAMILY

    def rsample_and_log_prob(
        self, x: Tensor, K: int, stop_param_grad: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Reparameterized z of shape (K, B, D) and log q(z|x) of shape (K, B).

        With ``stop_param_grad``, log q is evaluated with the variational parameters detached
        (only the path through z carries gradient), as STL/DReG require. Default: the family
        member at the encoder's per-point parameters, standard estimator only.
        """
        if stop_param_grad:
            raise NotImplementedError(f"{type(self).__name__} supports the standard estimator only")
        return self.rsample_and_log_prob_local(self.local_params(x), K)

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """log q(z|x) at given z (K, B, D) -> (K, B), x broadcast over K. Optional."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form log q(z|x) at given z")

    def local_params(self, x: Tensor) -> dict[str, Tensor]:
        """The per-point variational parameters the encoder outputs for x (B, D_x), each a
        tensor with leading dimension B: the family over which q* is optimized per point
        (Cremer et al. 2018, Sec. 3). Posteriors without such a family raise."""
        raise NotImplementedError(f"{type(self).__name__} has no per-point parameter family")

    def rsample_and_log_prob_local(
        self, params: dict[str, Tensor], K: int
    ) -> tuple[Tensor, Tensor]:
        """z (K, B, D) and log q(z) (K, B) of the family member with per-point ``params`` (as
        returned by :meth:`local_params`), differentiable w.r.t. them; for the diagonal
        Gaussian family, :func:`gaussian_rsample` at (mu, log_var)."""
        if self.family == GAUSSIAN:
            return gaussian_rsample(params["mu"], 0.5 * params["log_var"], K)
        raise NotImplementedError(f"{type(self).__name__} has no per-point parameter family")

    @torch.no_grad()
    def rsample(self, x: Tensor, K: int) -> Tensor:
        """K samples z (K, B, D) of q(z|x) without their log-density (cheaper where log q
        costs extra, and free of any stand-in for it)."""
        return self.rsample_and_log_prob(x, K)[0]


class Method(nn.Module):
    """Shared model: ``posterior`` q(z|x), ``decoder`` p(x|z), prior p(z) = N(0, I).

    Subclasses set ``name`` and ``default_objective`` and build their posterior in
    :meth:`build_posterior`. Their options (``self.options``) and supported estimators are
    declared, torch-free, in :data:`vaeinf.config.METHOD_OPTIONS` and
    :data:`vaeinf.names.METHODS`. A method gets the model's sizes, its own options and whether
    its loss is compiled (``train.compile``); nothing else of the run's config.
    """

    name: ClassVar[str] = ""
    #: The bound trained ("iwae": L_K, or "elbo") unless the options name one (:attr:`objective`).
    default_objective: ClassVar[str] = "iwae"

    def __init__(
        self, model: ModelConfig, options, dim: int, train_mean: Tensor, compile_loss: bool = False
    ):
        super().__init__()
        m = model.resolved()
        self.dim, self.latent, self.hidden = dim, m.latent, list(m.hidden)
        self.options = options
        self.compile_loss = compile_loss
        self.posterior = self.build_posterior(dim, m.latent, m.hidden, m.activation)
        self.decoder = BernoulliDecoder(m.latent, m.hidden[::-1], dim, m.activation, train_mean)

    @property
    def objective(self) -> str:
        """The bound trained: ``options.objective`` where the method's options have one, else
        :attr:`default_objective`."""
        return getattr(self.options, "objective", self.default_objective)

    @property
    def objective_spec(self) -> bounds.Objective:
        """The bound trained with its parameters: :attr:`objective`, and the options' ``groups``
        (MIWAE, PIWAE) and ``beta`` (CIWAE) where the method's options have them."""
        groups = getattr(self.options, "groups", None)
        beta = getattr(self.options, "beta", None)
        return bounds.Objective(
            self.objective, 1 if groups is None else groups, 0.0 if beta is None else beta
        )

    @property
    def eval_bytes_per_sample(self) -> int:
        """Bytes of the method's own state per (sample, point) row of evaluation log-weights, in
        float32, on top of the decoder's (:func:`bytes_per_row`), computed from the method's own
        sizes: it sizes evaluation's chunks of points and samples under the memory budget.
        Default 0: nothing beyond the decoder's activations and the latent samples."""
        return 0

    def build_posterior(
        self, dim: int, latent: int, hidden: list[int], activation: str
    ) -> Posterior:
        raise NotImplementedError

    # -- the log-weight contract -----------------------------------------------------------
    def prior(self) -> torch.distributions.Distribution:
        return standard_normal(self.latent, device=self.decoder.net[-1].bias.device)

    def log_weights(
        self, x: Tensor, K: int, stop_param_grad: bool = False, decoder_grad: bool = True
    ) -> tuple[Tensor, Tensor]:
        """log w = log p(x|z) + log p(z) - log q(z|x), shape (K, B), and z (K, B, D).

        The decoder is called once on all K*B samples (no loop over K); with ``decoder_grad``
        False its parameters enter as constants (see :meth:`log_px`).
        """
        z, log_q = self.posterior.rsample_and_log_prob(x, K, stop_param_grad)  # (K,B,D), (K,B)
        log_px = self.log_px(x, z, decoder_grad)  # (K, B)
        return log_px + self.prior().log_prob(z) - log_q, z

    def log_px(self, x: Tensor, z: Tensor, decoder_grad: bool = True) -> Tensor:
        """log p(x|z) of shape (K, B) for z (K, B, D), the decoder called once on the K*B rows.
        With ``decoder_grad`` False the decoder's parameters are constants, so the gradient
        reaches z alone (PIWAE's encoder path, :func:`vaeinf.core.bounds.loss`)."""
        if decoder_grad:
            logits = self.decoder(z)  # (K, B, D_x)
        else:
            params = {k: p.detach() for k, p in self.decoder.named_parameters()}
            logits = functional_call(self.decoder, params, (z,))
        return self.decoder.log_prob(x, logits)

    @torch.no_grad()
    def eval_log_weights(self, x: Tensor, K: int, block: int | None = None) -> Tensor:
        """Log importance weights for evaluation, (K, B). Methods without a density override
        this with an explicit proposal; for the rest it is :meth:`log_weights`, whose K samples
        are independent (``block`` only matters to a ``stratified_proposal``)."""
        return self.log_weights(x, K)[0]

    #: True when :meth:`eval_log_weights` draws a deterministic mixture over each block of
    #: samples rather than independent samples, so that a group of K samples cut from a larger
    #: draw is not an L_K estimate: the bound curve then draws every K in blocks of K.
    stratified_proposal: ClassVar[bool] = False

    #: What :meth:`eval_log_weights` samples from, recorded in metrics.json.
    proposal: ClassVar[str] = "the posterior q(z|x) itself"

    def extra_metrics(self, x: Tensor, K: int) -> dict:
        """Method-specific entries of metrics.json, evaluated on the test points x (B, D_x), for
        a run trained with K samples."""
        return {}

    # -- training hooks --------------------------------------------------------------------
    def make_optimizers(self, lr: float, betas: list[float], eps: float) -> list:
        """Optimizers; the first one's learning rate follows the schedule.

        Adam uses its fused kernel (one pass per parameter instead of a dozen small ops; the
        same update up to float rounding) on CPU and CUDA; the benchmark report gives its
        effect on the step time.
        """
        params = list(self.parameters())
        fused = all(p.device.type in ("cpu", "cuda") for p in params) or None
        return [torch.optim.Adam(params, lr=lr, betas=tuple(betas), eps=eps, fused=fused)]

    def training_loss(self, x: Tensor, K: int, estimator: str) -> tuple[Tensor, Tensor]:
        """(loss to minimise, per-point bound (B,)) for one batch: :func:`vaeinf.core.bounds.loss`
        on this method's objective, compiled when ``compile_loss`` (``train.compile``) is set."""
        loss_fn = bounds.compiled_loss() if self.compile_loss else bounds.loss
        return loss_fn(self, x, K, self.objective_spec, estimator)

    @property
    def gradient_draws(self) -> str:
        """How the gradients of draws of :meth:`training_loss` are batched
        (:func:`vaeinf.core.snr.gradient_draws`): ``batched`` (vmap, the gradient taken outside
        it), or for a loss that takes gradients itself ``nested`` or ``loop``."""
        return "batched"

    def gradient_groups(self) -> dict[str, list[str]]:
        """The parameters whose gradient signal-to-noise ratio is measured
        (:mod:`vaeinf.core.snr`), by part: ``encoder`` (q's) and ``decoder`` (p's), each
        a list of names of :meth:`named_parameters`."""
        return {
            "encoder": [n for n, _ in self.named_parameters() if n.startswith("posterior.")],
            "decoder": [n for n, _ in self.named_parameters() if n.startswith("decoder.")],
        }

    def check_epoch(self, train_objective: float, val_LK: float, K: int) -> None:
        """Called by the training loop after every epoch, before its checkpoint, with the
        epoch's mean training objective and the validation L_K at the training K; raises
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


# ---------------------------------------------------------------------------------------------
# Memory budget of evaluation: how many (sample, point) rows of log-weights fit.


def bytes_per_row(model: Method) -> int:
    """A conservative estimate of the memory one (sample, data point) row of log-weights needs:
    the decoder's activations (pre- and post-activation per layer), the data-sized logits and
    their log-likelihood terms, and the latent samples, in float32, plus the method's own
    per-sample state (``eval_bytes_per_sample``)."""
    widths = [layer.out_features for layer in model.decoder.net if hasattr(layer, "out_features")]
    floats = 2 * sum(widths) + 3 * model.dim + 8 * model.latent
    return 4 * floats + model.eval_bytes_per_sample


def chunking(model: Method, n_points: int, K: int, memory_mb: float) -> tuple[int, int]:
    """(points per chunk, samples per chunk) so that one chunk fits in ``memory_mb``."""
    rows = max(1, int(memory_mb * 2**20 / bytes_per_row(model)))
    if K <= rows:
        return max(1, min(n_points, rows // K)), K
    return 1, rows
