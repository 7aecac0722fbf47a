"""Planar, radial and inverse autoregressive flows: log-determinants against autograd Jacobians,
invertibility for any raw parameters, MADE's autoregressive structure, exact inverses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from vaeinf.config import ModelConfig, RunConfig
from vaeinf.core.methods import build_model
from vaeinf.core.methods.autoregressive import iaf_step
from vaeinf.core.methods.flow import (
    planar_inverse,
    planar_step,
    planar_u_hat,
    radial_inverse,
    radial_step,
)

D = 5


pytestmark = pytest.mark.usefixtures("one_thread")


def log_abs_det(f, z: torch.Tensor) -> torch.Tensor:
    """log |det df/dz| of f: R^D -> R^D at z (D,), from the full autograd Jacobian."""
    return torch.linalg.slogdet(jacobian(f, z))[1]


def planar_params(g: torch.Generator, adversarial: float | None = None):
    u = torch.randn(1, D, generator=g, dtype=torch.float64)
    w = torch.randn(1, D, generator=g, dtype=torch.float64)
    b = torch.randn(1, generator=g, dtype=torch.float64)
    if adversarial is not None:  # u anti-parallel to w: w^T u = -adversarial |w|^2
        u = -adversarial * w + 0.1 * u
    return u, w, b


@pytest.mark.parametrize("adversarial", [None, 0.5, 3.0, 50.0])
def test_planar_log_det_matches_the_jacobian(adversarial):
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        u, w, b = planar_params(g, adversarial)
        z = 2 * torch.randn(D, generator=g, dtype=torch.float64)
        _, log_det = planar_step(z[None, None], u, w, b)

        def f(v, u=u, w=w, b=b):
            return planar_step(v[None, None], u, w, b)[0][0, 0]

        torch.testing.assert_close(log_det[0, 0], log_abs_det(f, z), rtol=1e-9, atol=1e-9)


def test_planar_invertibility_for_any_raw_parameters():
    """w^T u_hat = m(w^T u) >= -1 (Rezende & Mohamed 2015, Appendix A.1), even where w^T u is
    hugely negative, and the map is then strictly increasing along w, so it is invertible."""
    g = torch.Generator().manual_seed(1)
    scales = torch.tensor([0.0, 1.0, 10.0, 1e2, 1e3, 1e4], dtype=torch.float64)
    w = torch.randn(len(scales), 50, D, generator=g, dtype=torch.float64)
    u = torch.randn(len(scales), 50, D, generator=g, dtype=torch.float64)
    u = u - scales[:, None, None] * w  # w^T u down to about -1e4 |w|^2
    u = torch.cat([u, 1e4 * torch.randn(50, D, generator=g, dtype=torch.float64)[None]])
    w = torch.cat([w, 1e-3 * torch.randn(50, D, generator=g, dtype=torch.float64)[None]])
    wu = (w * u).sum(-1)
    w_u_hat = (w * planar_u_hat(u, w)).sum(-1)
    tol = 1e-12 * (1 + wu.abs() * (w * w).sum(-1).sqrt())  # float64 rounding of the formula
    assert (w_u_hat >= -1 - tol).all()
    torch.testing.assert_close(w_u_hat, -1 + F.softplus(wu), atol=1e-9, rtol=1e-9)
    assert wu.min() < -1e3  # the adversarial cases are there

    # Along w the map is g(s) = s + (w^T u_hat) tanh(|w| s + b): strictly increasing.
    s = torch.linspace(-20, 20, 4001, dtype=torch.float64)
    for i in range(4):
        u_i, w_i = u[i, :1], w[i, :1]
        w_hat = w_i / w_i.norm()
        z = s[:, None, None] * w_hat  # (S, 1, D)
        y = planar_step(z, u_i, w_i, torch.zeros(1, dtype=torch.float64))[0]
        proj = (y * w_hat).sum(-1).squeeze(-1)  # (S,)
        assert (proj.diff() > 0).all()

    # In float32 the log-determinant stays finite for the same adversarial parameters.
    z = torch.randn(7, 50, D, generator=g)
    for i in (5, 6):  # w^T u ~ -1e4 |w|^2; and huge u with tiny w
        y, log_det = planar_step(z, u[i].float(), w[i].float(), torch.zeros(50))
        assert torch.isfinite(y).all() and torch.isfinite(log_det).all()


def test_radial_log_det_and_inverse():
    g = torch.Generator().manual_seed(2)
    for trial in range(10):
        z0 = torch.randn(1, D, generator=g, dtype=torch.float64)
        a_raw = 2 * torch.randn(1, generator=g, dtype=torch.float64)
        # Include beta near its lower limit -alpha (strong contraction).
        b_raw = torch.tensor([-8.0 if trial < 3 else 0.0], dtype=torch.float64)
        b_raw = b_raw + 2 * torch.randn(1, generator=g, dtype=torch.float64)
        z = z0[0] + torch.randn(D, generator=g, dtype=torch.float64)
        y, log_det = radial_step(z[None, None], z0, a_raw, b_raw)

        def f(v, z0=z0, a_raw=a_raw, b_raw=b_raw):
            return radial_step(v[None, None], z0, a_raw, b_raw)[0][0, 0]

        torch.testing.assert_close(log_det[0, 0], log_abs_det(f, z), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(radial_inverse(y, z0, a_raw, b_raw)[0, 0], z)


@pytest.mark.parametrize("reverse", [False, True])
def test_iaf_step_jacobian_is_triangular_with_the_right_log_det(reverse):
    torch.manual_seed(3)
    step = iaf_step(D, 4, [16, 16], reverse=reverse).double()
    h = torch.randn(1, 4, dtype=torch.float64)
    z = torch.randn(D, dtype=torch.float64)

    def f(v):
        return step(h).call_and_ladj(v[None])[0][0]

    J = jacobian(f, z)  # J[i, j] = dz'_i / dz_j
    _, ladj = step(h).call_and_ladj(z[None])
    torch.testing.assert_close(ladj[0], torch.linalg.slogdet(J)[1], rtol=1e-9, atol=1e-9)
    # Output i depends on z_j only for j before i in the order (and on z_i itself).
    order = torch.arange(D).flip(0) if reverse else torch.arange(D)
    allowed = order[:, None] >= order[None, :]  # (i, j)
    assert (J[~allowed] == 0).all()
    assert (J[allowed] != 0).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_made_outputs_depend_only_on_earlier_inputs(reverse):
    """zuko's MADE (Germain et al. 2015): the parameters (m_i, s_i) of feature i depend on
    z_j only when j comes before i in the order, and on every context feature."""
    torch.manual_seed(4)
    C = 3
    step = iaf_step(D, C, [16, 16], reverse=reverse).double()
    total = step.total  # MADE outputs per feature (m and s)
    z, h = torch.randn(D, dtype=torch.float64), torch.randn(C, dtype=torch.float64)
    Jz = jacobian(lambda v: step.hyper(torch.cat([v, h])), z)  # (D * total, D)
    Jh = jacobian(lambda c: step.hyper(torch.cat([z, c])), h)  # (D * total, C)
    Jz = Jz.view(D, total, D)
    order = torch.arange(D).flip(0) if reverse else torch.arange(D)
    earlier = order[:, None] > order[None, :]  # (i, j): j strictly before i
    assert (Jz[~earlier.unsqueeze(1).expand_as(Jz)] == 0).all()
    assert (Jz[earlier.unsqueeze(1).expand_as(Jz)] != 0).all()
    assert (Jh != 0).all()


@pytest.mark.parametrize("adversarial", [None, 0.5, 3.0, 50.0])
def test_planar_inverse_recovers_z(adversarial):
    """planar_inverse(planar_step(z)) = z, also where w^T u_hat is near -1 (adversarial u, the
    map nearly flat along w) or large (steep), and for points far out along w."""
    g = torch.Generator().manual_seed(8)
    for _ in range(10):
        u, w, b = planar_params(g, adversarial)
        z = 5 * torch.randn(64, 1, D, generator=g, dtype=torch.float64)
        y, _ = planar_step(z, u, w, b)
        torch.testing.assert_close(planar_inverse(y, u, w, b), z, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "method,options",
    [
        ("flow", {"flow": "radial"}),
        ("flow", {"flow": "planar"}),
        ("autoregressive", {}),
        ("autoregressive", {"steps": 3}),
    ],
)
def test_log_prob_inverts_the_sampler(method, options):
    """log_prob(z, x) at the posterior's own samples equals the log q returned with them."""
    torch.manual_seed(5)
    cfg = RunConfig(method=method, model=ModelConfig(hidden=[16], latent=D), method_options=options)
    model = build_model(cfg, 12, torch.full((12,), 0.3)).double()
    x = torch.bernoulli(torch.full((8, 12), 0.4, dtype=torch.float64))
    with torch.no_grad():
        z, log_q = model.posterior.rsample_and_log_prob(x, 4)
        torch.testing.assert_close(model.posterior.log_prob(z, x), log_q, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("flow", ["planar", "radial"])
def test_flow_posterior_log_q_matches_the_jacobian_of_the_whole_flow(flow):
    """log q_T = log q_0(z_0) - log |det dz_T/dz_0| for the amortized stack of 8 steps."""
    torch.manual_seed(6)
    cfg = RunConfig(method="flow", model=ModelConfig(hidden=[16], latent=D))
    cfg.method_options = {"flow": flow}
    model = build_model(cfg, 12, torch.full((12,), 0.3)).double()
    post = model.posterior
    x = torch.bernoulli(torch.full((1, 12), 0.4, dtype=torch.float64))
    mu, log_sigma, steps = post.params(x)
    sigma = log_sigma.exp()

    def through(z0):
        z = z0[None, None]
        for p in steps:
            z = post._step(z, p)[0]
        return z[0, 0]

    torch.manual_seed(7)
    z_T, log_q = post.rsample_and_log_prob(x, 1)
    torch.manual_seed(7)
    z0 = mu[0] + sigma[0] * torch.randn(1, 1, D, dtype=torch.float64)[0, 0]
    torch.testing.assert_close(through(z0), z_T[0, 0])
    log_q0 = torch.distributions.Normal(mu[0], sigma[0]).log_prob(z0).sum()
    expected = log_q0 - log_abs_det(through, z0)
    torch.testing.assert_close(log_q[0, 0], expected, rtol=1e-9, atol=1e-9)
