"""The explicit method registry: name -> class. A new method is one module and one line here
(plus its name in :data:`vaeinf.names.METHODS` and, with options, a dataclass in
:data:`vaeinf.config.METHOD_OPTIONS`)."""

from __future__ import annotations

from vaeinf.core.methods.autoregressive import AutoregressiveMethod
from vaeinf.core.methods.avb import AVB
from vaeinf.core.methods.base import Method, Posterior
from vaeinf.core.methods.flow import FlowMethod
from vaeinf.core.methods.gaussian import IWAE, VAE
from vaeinf.core.methods.semi_amortized import SemiAmortizedMethod
from vaeinf.errors import DivergedObjective, NonFiniteLoss

REGISTRY: dict[str, type[Method]] = {
    "vae": VAE,
    "iwae": IWAE,
    "flow": FlowMethod,
    "autoregressive": AutoregressiveMethod,
    "avb": AVB,
    "semi_amortized": SemiAmortizedMethod,
}


def build_model(cfg, dim: int, train_mean) -> Method:
    """Instantiate the method named by ``cfg.method`` for data of dimension ``dim``, from the
    run config's parts a method reads: the model, the method's options, ``train.compile``."""
    cls = REGISTRY[cfg.method]
    return cls(cfg.model, cfg.options(), dim, train_mean, compile_loss=cfg.train.compile)


__all__ = ["REGISTRY", "DivergedObjective", "Method", "NonFiniteLoss", "Posterior", "build_model"]
