"""The explicit method registry: name -> class. A new method is one module and one line here."""

from __future__ import annotations

from vaeinf.methods.base import Method, NonFiniteLoss, Posterior
from vaeinf.methods.gaussian import IWAE, VAE

REGISTRY: dict[str, type[Method]] = {
    "vae": VAE,
    "iwae": IWAE,
}


def build_model(cfg, dim: int, train_mean) -> Method:
    """Instantiate the method named by ``cfg.method`` for data of dimension ``dim``."""
    return REGISTRY[cfg.method](cfg, dim, train_mean)


__all__ = ["REGISTRY", "Method", "NonFiniteLoss", "Posterior", "build_model"]
