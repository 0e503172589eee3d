"""gan-cli: config-driven GAN experiments on PyTorch and Hydra."""

__version__ = "0.1.0"
