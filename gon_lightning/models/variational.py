"""The negative ELBO shared by the variational GON and the VAE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def negative_elbo(x_hat: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Per sample, in nats: Bernoulli negative log-likelihood summed over pixels + KL(q(z|x) || N(0, I))."""
    nll = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
    return nll + kl


def bits_per_dim(nats_per_image: Tensor, image_shape: tuple[int, ...]) -> Tensor:
    return nats_per_image / (math.prod(image_shape) * math.log(2))
