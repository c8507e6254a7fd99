"""Variational autoencoder baseline: the autoencoder's networks with a Gaussian latent and the negative ELBO."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from gon_lightning.models.autoencoder import ConvAutoencoder
from gon_lightning.models.variational import (
    EvalLatent,
    add_elbo_metrics,
    checked_eval_latent,
    evaluation_latent,
    negative_elbo,
    reparameterize,
    update_elbo_metrics,
)


class VAE(ConvAutoencoder):
    """The encoder's nz features go through two linear maps to the mean and log-variance of q(z|x).

    Trained on the negative ELBO (Bernoulli likelihood summed over pixels + KL, averaged over the batch),
    as the variational GON. Reconstructions decode a posterior sample (`eval_latent`, see
    `variational.evaluation_latent`); `elbo` (nats per image, one posterior sample) and `bpd` are logged with the
    reconstruction metrics. Samples decode z ~ N(0, I) by default (`prior`); `gaussian` and `gmm` are fitted to
    the posterior means (models/latent.py).

    Other options: as `ConvAutoencoder`'s.

    Args:
        eval_latent: the latent a reconstruction decodes: "sample" (a posterior sample: the references'
            protocol, so SSE means the published figure) or "mean" (the posterior mean).
    """

    samplers = ("prior", "gaussian", "gmm")

    def __init__(self, eval_latent: EvalLatent = "sample", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.eval_latent = checked_eval_latent(eval_latent)
        nz = self.nz
        self.to_mu = nn.Linear(nz, nz)
        self.to_logvar = nn.Linear(nz, nz)
        add_elbo_metrics(self.val_metrics)
        add_elbo_metrics(self.test_metrics)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.encoder(x)
        return self.to_mu(features), self.to_logvar(features)

    def encode_images(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(evaluation_latent(*self.posterior(x), self.eval_latent))

    def loss(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Negative ELBO per image (one posterior sample) and the reconstruction it decoded."""
        nelbo, x_hat, _ = self.loss_and_means(x)
        return nelbo, x_hat

    def loss_and_means(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`loss`, and the posterior means (the space the samplers draw in)."""
        mu, logvar = self.posterior(x)
        x_hat = self.decoder(reparameterize(mu, logvar))
        return negative_elbo(x_hat, x, mu, logvar), x_hat, mu

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        nelbo, x_hat, mu = self.loss_and_means(x)
        self.step_latents = mu.detach()
        loss = nelbo.mean()
        self.log_train(loss, x_hat, x)
        return loss

    def _evaluate(self, x: Tensor, metrics: nn.ModuleDict, stage: str) -> Tensor:
        x_hat = super()._evaluate(x, metrics, stage)
        with self.evaluation_protocol():
            nelbo, _ = self.loss(x)
        update_elbo_metrics(metrics, nelbo, self.image_shape)
        return x_hat
