"""The negative ELBO shared by the variational GON and the VAE."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
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


class ElboMetrics(nn.Module):
    """Epoch means of the negative ELBO (nats per image) and of bits per dimension, logged as `<stage>/elbo`
    and `<stage>/bpd`."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.elbo = MeanMetric()
        self.bpd = MeanMetric()

    def log(self, model: LightningModule, nats_per_image: Tensor, stage: str) -> None:
        """Add a batch's negative ELBO and log both means, as `model`'s `<stage>/elbo` and `<stage>/bpd`."""
        nats = nats_per_image.detach()
        self.elbo.update(nats)
        self.bpd.update(bits_per_dim(nats, self.image_shape))
        model.log_dict({f"{stage}/elbo": self.elbo, f"{stage}/bpd": self.bpd}, batch_size=len(nats))
