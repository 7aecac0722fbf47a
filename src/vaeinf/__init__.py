"""vaeinf: a reproducible study of inference in variational autoencoders."""

__version__ = "0.1.0"
