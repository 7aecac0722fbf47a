"""The explicit method registry: name -> class. A new method is one module and one line here
(plus its name in :data:`vaeinf.names.METHODS` and, with options, a dataclass in
:data:`vaeinf.config.METHOD_OPTIONS`)."""

from __future__ import annotations

from vaeinf.errors import DivergedObjective, NonFiniteLoss
from vaeinf.methods.autoregressive import AutoregressiveMethod
from vaeinf.methods.avb import AVB
from vaeinf.methods.base import Method, Posterior
from vaeinf.methods.flow import FlowMethod
from vaeinf.methods.gaussian import IWAE, VAE
from vaeinf.methods.semi_amortized import SemiAmortizedMethod

REGISTRY: dict[str, type[Method]] = {
    "vae": VAE,
    "iwae": IWAE,
    "flow": FlowMethod,
    "autoregressive": AutoregressiveMethod,
    "avb": AVB,
    "semi_amortized": SemiAmortizedMethod,
}


def build_model(cfg, dim: int, train_mean) -> Method:
    """Instantiate the method named by ``cfg.method`` for data of dimension ``dim``."""
    return REGISTRY[cfg.method](cfg, dim, train_mean)


__all__ = ["REGISTRY", "DivergedObjective", "Method", "NonFiniteLoss", "Posterior", "build_model"]
