"""The variational GON (V-GON): the origin step on the negative ELBO of a VAE-style decoder."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gon_lightning.models.base import ConvNetModel, update_reconstruction_metrics
from gon_lightning.models.inner_loop import InnerLoopModel
from gon_lightning.models.variational import (
    EvalLatent,
    add_elbo_metrics,
    checked_eval_latent,
    evaluation_latent,
    negative_elbo,
    reparameterize,
    update_elbo_metrics,
)


class VariationalGON(ConvNetModel, InnerLoopModel):
    """V-GON: F(z) = decoder(reparameterise(mu(z), logvar(z))), mu and logvar linear maps nz -> nz.

    Inner and outer loss are the negative ELBO (Bernoulli BCE summed over pixels + KL summed over nz; the
    batch combined by `inner_reduction` inside, averaged outside). 435,281 parameters at nz 256, ngf 16, one
    channel: the GON's 303,697 plus the two linear maps.

    The latent space of the generation interface is the decoder's input (the space of the N(0, I) prior):
    `encode_images` returns mu of the origin-step latent, `decode_latents` is the conv decoder, `sample`
    decodes N(0, I) draws by default (`prior`; also `gaussian` and `gmm`, fitted to the mus),
    and interpolation runs between the mus. The origin step samples as in training
    (F includes the reparameterisation), also in evaluation; the reconstruction then decodes a posterior
    sample (`eval_latent`, see `variational.evaluation_latent`). Val/test additionally log `elbo` (negative
    ELBO, nats per image, a one-sample estimate with the reparameterised draw, as in training) and `bpd` (the
    same in bits per dimension).

    Other options: as `GON`'s.

    Args:
        eval_latent: the latent a reconstruction decodes: "sample" (a posterior sample: the references'
            protocol, so SSE means the published figure) or "mean" (the posterior mean).
    """

    samplers = ("prior", "gaussian", "gmm")  # the prior by default; the fitted ones lazily (models/latent.py)
    fits_latent_gaussian = False
    lazy_samplers = ("gaussian", "gmm")

    def __init__(self, eval_latent: EvalLatent = "sample", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_latent = checked_eval_latent(eval_latent)
        nz = self.nz
        self.to_mu = nn.Linear(nz, nz)
        self.to_logvar = nn.Linear(nz, nz)
        self.decoder = self.make_decoder()  # an own decoder's output is the Bernoulli mean, in [0, 1]
        add_elbo_metrics(self.val_metrics)
        add_elbo_metrics(self.test_metrics)

    def posterior(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.to_mu(z), self.to_logvar(z)

    def latent_loss(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.posterior(z)
        # always sampled, evaluation included: at the origin every sample's mu is identical, and the noise is
        # what gives the decoder's first BatchNorm a non-zero batch variance (measured: without it the
        # reference protocol's test ELBO went from 367 to 2759 nats)
        x_hat = self.decoder(reparameterize(mu, logvar))
        return negative_elbo(x_hat, x, mu, logvar), x_hat

    def encode_images(self, x: Tensor) -> Tensor:
        mu, _ = self.posterior(self.encode(x, create_graph=False))
        return mu.detach()

    @torch.no_grad()
    def sampling_latents(self, z: Tensor) -> Tensor:
        return self.to_mu(z.detach())  # the samplers' space is the decoder's input: the posterior mean

    def decode_latents(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def reconstruct(self, x: Tensor) -> Tensor:
        mu, logvar = self.posterior(self.encode(x, create_graph=False).detach())
        return self.decoder(evaluation_latent(mu, logvar, self.eval_latent))

    def _evaluate(self, x: Tensor, metrics: nn.ModuleDict, stage: str) -> Tensor:
        with self.evaluation_protocol():
            mu, logvar = self.posterior(self.encode(x, create_graph=False).detach())
            x_hat = self.decoder(evaluation_latent(mu, logvar, self.eval_latent))
            nelbo = negative_elbo(self.decoder(reparameterize(mu, logvar)), x, mu, logvar)
        update_reconstruction_metrics(metrics, x_hat, x)
        update_elbo_metrics(metrics, nelbo, self.image_shape)
        return x_hat
