"""Learned priors over a model's latents: samplers that make a decoder's samples look like the data.

A prior is a LightningModule over the latents (N, nz) of a model's training split (`base.LatentPrior`): trained
post hoc as a run of its own (`gon-lightning fit --config prior --data.ckpt_path <model checkpoint>`) or online,
during the model's own `fit` (`OnlinePrior`), and attached to the model (`LatentModel.attach_prior`) as a sampler
of its name: `diffusion` (flow matching) or `flow` (a zuko normalizing flow). docs/priors.md has the protocol,
the measurements and each option's cost.
"""

from gon_lightning.priors.base import LatentPrior
from gon_lightning.priors.flow_matching import FlowMatchingPrior
from gon_lightning.priors.normalizing_flow import NormalizingFlowPrior
from gon_lightning.priors.online import OnlinePrior

__all__ = ["FlowMatchingPrior", "LatentPrior", "NormalizingFlowPrior", "OnlinePrior"]
