"""The `flow` sampler: a normalizing flow (zuko) over a model's standardised latents, which also gives a likelihood.

zuko (MIT, torch only, maintained) rather than normflows: `benchmarks/flow_library.py` fits the same masked
autoregressive flow with each on the same latents and prints fit time, held-out bits per dimension and sampling time
(docs/priors.md says what has been measured). The flow is
trained by maximum likelihood; validation logs `val/bpd`, the held-out latents' negative log-likelihood in bits per
dimension *of the model's latent space* (the standardisation's Jacobian included), so it compares across runs
of one model. Latents are continuous: a density's bits per dimension can be negative.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from gon_lightning.errors import MODEL, UserError, positive_int, require
from gon_lightning.priors.base import LatentPrior, latents_of

FlowKind = Literal["maf", "nsf"]


class NormalizingFlowPrior(LatentPrior):
    """A masked autoregressive flow (`maf`, affine) or neural spline flow (`nsf`) from zuko: the `flow` sampler.

    Sampling inverts the autoregressive transforms (nz network passes per transform), so it is slower than the
    likelihood; training is one pass. Options besides the optimiser's (`LatentPrior`):

    Args:
        kind: `maf` or `nsf`.
        transforms: autoregressive transforms stacked (each reverses the order of the last).
        hidden: width of each transform's two hidden layers.
    """

    sampler_name = "flow"

    def __init__(self, kind: FlowKind = "maf", transforms: int = 5, hidden: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        require(kind in ("maf", "nsf"), MODEL + "kind", kind, "'maf' or 'nsf'")
        positive_int(MODEL + "transforms", transforms)
        positive_int(MODEL + "hidden", hidden)
        try:
            import zuko
        except ImportError as error:  # a core dependency; said plainly should an install lack it
            raise UserError("the flow prior needs zuko: pip install zuko") from error
        flow = zuko.flows.MAF if kind == "maf" else zuko.flows.NSF
        self.flow = flow(self.nz, transforms=transforms, hidden_features=(hidden, hidden))

    def log_prob(self, x: Tensor) -> Tensor:
        """log-density of standardised latents (B,)."""
        return self.flow().log_prob(x)

    def loss(self, x: Tensor, shard: tuple[int, int] = (0, 1), generator: torch.Generator | None = None) -> Tensor:
        return -self.log_prob(x).mean() / self.nz  # nats per dimension: the scale of the learning rate

    def bits_per_dim(self, z: Tensor) -> Tensor:
        """Negative log-likelihood of latents `z` (B, nz) in the model's latent space, in bits per dimension."""
        nll = -self.log_prob(self.standardise(z)) + self.latent_std.log().sum()
        return nll / (self.nz * math.log(2))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        z = latents_of(batch)
        super().validation_step(batch, batch_idx)
        self.log("val/bpd", self.bits_per_dim(z).mean(), prog_bar=True, batch_size=len(z), sync_dist=True)

    def sample_standardised(self, n: int) -> Tensor:
        return self.flow().sample((n,)).to(self.latent_mean.dtype)
