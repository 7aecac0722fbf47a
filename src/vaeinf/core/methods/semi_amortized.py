"""Semi-amortized posterior: SVI refinement of the encoder's Gaussian (`semi_amortized`).

Why: to close the amortization gap. From the encoder's lambda_0 = (mu_0, log sigma_0^2), T steps
of gradient ascent with momentum on the per-point ELBO give lambda_T, and q(z|x) = N(lambda_T) is
the posterior of the bound and of evaluation. The encoder's gradient flows back through the T
steps (double backward); the decoder's parameters are constants inside the refinement. The
ablation ``backprop_through_refinement: false`` detaches it: the encoder then trains on its own
bound (amortized initialization of SVI, Hjelm et al. 2016; Krishnan et al. 2018). Batched over
the minibatch; only the T steps are a Python loop.

Reference: Kim, Wiseman, Miller, Sontag & Rush (2018), "Semi-Amortized Variational
Autoencoders", ICML, Algorithm 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

from vaeinf.core import bounds
from vaeinf.core.methods.base import (
    GAUSSIAN,
    Method,
    Posterior,
    gaussian_log_prob,
    gaussian_rsample,
)
from vaeinf.core.nets import bernoulli_log_prob, mlp

#: Seed of the refinement noise in eval mode (see :meth:`SemiAmortizedPosterior.refine`).
EVAL_SEED = 0


class SemiAmortizedPosterior(Posterior):
    """N(mu_T, sigma_T^2) after T SVI steps from the encoder's N(mu_0, sigma_0^2).

    Needs the model's decoder, attached after construction with :meth:`attach` (kept out of the
    module tree, so its parameters are neither duplicated in the state dict nor optimized twice).
    """

    family = GAUSSIAN

    def __init__(self, dim: int, latent: int, hidden: list[int], activation: str, options):
        super().__init__()
        self.options = options
        self.encoder = mlp([dim, *hidden, 2 * latent], activation)
        self.__dict__["_decoder"] = None

    def attach(self, decoder: nn.Module) -> None:
        self.__dict__["_decoder"] = decoder

    def initial(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's lambda_0 = (mu_0, log sigma_0^2), each (B, D)."""
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return mu, log_var

    def elbo(
        self, x: Tensor, mu: Tensor, log_var: Tensor, n: int, generator=None, params=None
    ) -> Tensor:
        """f(lambda; x) per point (B,): n-sample E_q[log p(x|z)] minus the closed-form KL.

        ``params``: decoder parameters to use (e.g. detached ones); None: the decoder's own."""
        # With a generator (evaluation), one noise draw is shared by every point of the batch,
        # so a point's refined posterior is a function of the point alone, not of its position
        # in the batch or of the batch's size. (n, 1, D) broadcast over B.
        shape = (n, 1, mu.shape[-1]) if generator is not None else (n, *mu.shape)
        eps = torch.randn(shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * log_var) * eps  # (n, B, D)
        dec = self._decoder
        logits = dec(z) if params is None else functional_call(dec, params, (z,))  # (n, B, D_x)
        kl = 0.5 * (torch.exp(log_var) + mu * mu - 1.0 - log_var).sum(-1)  # (B,)
        return bernoulli_log_prob(x, logits).mean(0) - kl

    def refine(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """lambda_T = (mu_T, log sigma_T^2), each (B, D), from T steps of SGD with momentum on f.

        The graph through the steps is kept (create_graph) when gradients are enabled and
        ``backprop_through_refinement`` is on; otherwise lambda_T is detached. Gradients are
        switched on inside (torch.enable_grad), so this also works under torch.no_grad
        (evaluation; not under torch.inference_mode). The decoder's parameters enter as
        constants. In training mode the refinement's noise comes from the global RNG; in eval
        mode from a generator seeded with EVAL_SEED, one draw shared by every point, so that the
        refined posterior of a point is a fixed function of that point alone (whatever batch it
        is in) and :meth:`log_prob` evaluates the density the samples of
        :meth:`rsample_and_log_prob` came from.
        """
        o = self.options
        mu, log_var = self.initial(x)
        through = torch.is_grad_enabled() and o.backprop_through_refinement and mu.requires_grad
        if o.steps == 0:
            return (mu, log_var) if through else (mu.detach(), log_var.detach())
        generator = None
        if not self.training:
            generator = torch.Generator(device=x.device).manual_seed(EVAL_SEED)
        params = {k: p.detach() for k, p in self._decoder.named_parameters()}
        with torch.enable_grad():
            if not through:
                mu, log_var = mu.detach().requires_grad_(), log_var.detach().requires_grad_()
            v_mu, v_lv = torch.zeros_like(mu), torch.zeros_like(log_var)
            for _ in range(o.steps):
                f = self.elbo(x, mu, log_var, o.refine_samples, generator, params).sum()
                g_mu, g_lv = torch.autograd.grad(f, (mu, log_var), create_graph=through)
                if o.grad_clip is not None:
                    norm = torch.sqrt((g_mu * g_mu).sum(-1) + (g_lv * g_lv).sum(-1) + 1e-12)
                    scale = (o.grad_clip / norm).clamp(max=1.0).unsqueeze(-1)  # (B, 1)
                    g_mu, g_lv = g_mu * scale, g_lv * scale
                v_mu, v_lv = o.momentum * v_mu + g_mu, o.momentum * v_lv + g_lv
                mu, log_var = mu + o.lr * v_mu, log_var + o.lr * v_lv
                if not through:
                    mu, log_var = mu.detach().requires_grad_(), log_var.detach().requires_grad_()
        if not through:
            mu, log_var = mu.detach(), log_var.detach()
        return mu, log_var

    def rsample_and_log_prob(self, x, K, stop_param_grad=False):
        mu, log_var = self.refine(x)  # (B, D)
        z, log_q = gaussian_rsample(mu, 0.5 * log_var, K)  # (K, B, D), (K, B)
        if stop_param_grad:  # STL / DReG: log q with lambda_T detached
            return z, gaussian_log_prob(z, mu.detach(), 0.5 * log_var.detach())
        return z, log_q

    def log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """log N(z; mu_T, sigma_T^2) of the refined Gaussian, z (K, B, D) -> (K, B). In eval mode
        (fixed refinement noise) it is the density :meth:`rsample_and_log_prob` sampled from;
        in training mode the refinement's noise is drawn anew."""
        mu, log_var = self.refine(x)
        return gaussian_log_prob(z, mu, 0.5 * log_var)

    def local_params(self, x: Tensor) -> dict[str, Tensor]:
        """(mu_T, log sigma_T^2), each (B, D), after the refinement: the Gaussian family, so
        that q* of this family is what the refinement would reach with enough steps."""
        mu, log_var = self.refine(x)
        return {"mu": mu, "log_var": log_var}


class SemiAmortizedMethod(Method):
    """`semi_amortized`: SA-VAE (Kim et al. 2018) with the refined Gaussian trained on L_K by
    default (``method_options.objective``); STL and DReG apply to the refined Gaussian."""

    name = "semi_amortized"

    @property
    def gradient_draws(self) -> str:
        """The refinement takes gradients inside the loss: ``torch.func.grad`` nests through it;
        detached from the encoder it sets ``requires_grad`` itself, which no transform allows,
        so the draws are a loop (see :meth:`Method.gradient_draws`)."""
        return "nested" if self.options.backprop_through_refinement else "loop"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.posterior.attach(self.decoder)

    @property
    def eval_bytes_per_sample(self) -> int:
        """The refinement is per point, not per sample; its forward and backward through the
        decoder for ``refine_samples`` rows per point are charged to each sample row, which
        over-counts for large K (smaller chunks)."""
        widths = [m.out_features for m in self.decoder.net if isinstance(m, nn.Linear)]
        return 4 * 4 * sum(widths) * self.options.refine_samples

    def build_posterior(self, dim, latent, hidden, activation):
        return SemiAmortizedPosterior(dim, latent, hidden, activation, self.options)

    def encoder_bound(self, x: Tensor, K: int) -> Tensor:
        """The encoder's own bound (B,): the objective with q = N(lambda_0) and the decoder's
        parameters held constant, so its gradient reaches the encoder only (the ablation)."""
        mu, log_var = self.posterior.initial(x)
        z, log_q = gaussian_rsample(mu, 0.5 * log_var, K)  # (K, B, D), (K, B)
        params = {k: p.detach() for k, p in self.decoder.named_parameters()}
        logits = functional_call(self.decoder, params, (z,))  # (K, B, D_x)
        log_w = bernoulli_log_prob(x, logits) + self.prior().log_prob(z) - log_q  # (K, B)
        return bounds.bound(log_w, self.objective)

    def training_loss(self, x, K, estimator):
        """Kim et al. (2018), Algorithm 1 (or the detached ablation, see the module docstring).

        ``train.compile`` does not apply here: the refinement's double backward runs eagerly."""
        loss, bound = bounds.loss(self, x, K, self.objective, estimator)
        if not self.options.backprop_through_refinement:
            loss = loss - self.encoder_bound(x, K).mean()
        return loss, bound

    @torch.no_grad()
    def extra_metrics(self, x: Tensor, K: int) -> dict:
        """The amortization gap: the ELBO of the encoder's Gaussian and of the refined one,
        each from 100 samples per test point (Cremer et al. 2018 call the difference the
        amortization gap; Kim et al. 2018 report it for SA-VAE)."""
        n = 100
        enc, ref = [], []
        for xb in x.split(200):
            mu0, lv0 = self.posterior.initial(xb)
            enc.append(self.posterior.elbo(xb, mu0, lv0, n))
            mu, lv = self.posterior.refine(xb)
            ref.append(self.posterior.elbo(xb, mu, lv, n))
        enc, ref = torch.cat(enc).double(), torch.cat(ref).double()
        return {
            "refinement": {
                "elbo_encoder": enc.mean().item(),
                "elbo_refined": ref.mean().item(),
                "gain": (ref - enc).mean().item(),
                "samples": n,
                "n": len(x),
                "note": "per-point ELBO of q = N(lambda_0) (encoder) and N(lambda_T) (after "
                "the refinement); gain = refined - encoder",
            }
        }
