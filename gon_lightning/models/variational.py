"""The negative ELBO shared by the variational GON and the VAE."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from gon_lightning.errors import MODEL, require

EvalLatent = Literal["sample", "mean"]


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    return mu + torch.randn_like(mu) * (0.5 * logvar).exp()


def checked_eval_latent(eval_latent: str) -> EvalLatent:
    require(eval_latent in ("sample", "mean"), MODEL + "eval_latent", eval_latent, "'sample' or 'mean'")
    return eval_latent


def evaluation_latent(mu: Tensor, logvar: Tensor, eval_latent: EvalLatent) -> Tensor:
    """The latent a reconstruction decodes. "sample" is the references' protocol: they evaluated in train mode,
    where reparameterisation draws z ~ q(z|x), so their published SSE is of sampled reconstructions; "mean"
    decodes the posterior mean (deterministic, and a lower SSE)."""
    return reparameterize(mu, logvar) if eval_latent == "sample" else mu


def negative_elbo(x_hat: Tensor, x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Per sample, in nats: Bernoulli negative log-likelihood summed over pixels + KL(q(z|x) || N(0, I))."""
    nll = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).sum(1)
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
    return nll + kl


def bits_per_dim(nats_per_image: Tensor, image_shape: tuple[int, ...]) -> Tensor:
    return nats_per_image / (math.prod(image_shape) * math.log(2))


def add_elbo_metrics(metrics: nn.ModuleDict) -> None:
    """Add the epoch means of the negative ELBO (nats per image) and of bits per dimension to a model's
    evaluation metrics, logged as `<stage>/elbo` and `<stage>/bpd`."""
    metrics.update({"elbo": MeanMetric(), "bpd": MeanMetric()})


def update_elbo_metrics(metrics: nn.ModuleDict, nats_per_image: Tensor, image_shape: tuple[int, ...]) -> None:
    nats = nats_per_image.detach()
    metrics["elbo"].update(nats)
    metrics["bpd"].update(bits_per_dim(nats, image_shape))
