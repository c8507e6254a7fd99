"""gon-lightning: Gradient Origin Networks and their baselines on PyTorch Lightning."""

__version__ = "0.1.0"
