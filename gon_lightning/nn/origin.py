"""The origin step of a Gradient Origin Network, in plain PyTorch: the one implementation the GON family calls.

The latent of x is the negative gradient, at the origin z0 = 0, of the inner loss of decoding z0:
    z = z0 - d inner(F(z0), x) / d z0
Keeping the graph of that gradient (create_graph=True) lets the outer loss of F(z) train F through the
second-order term (docs/design.md, "The origin step").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from gon_lightning.errors import UserError

InnerReduction = Literal["mean", "sum"]


class OriginStep(NamedTuple):
    latents: Tensor  #: (B, nz); with create_graph, differentiable with respect to the decoder's parameters
    inner_loss: Tensor  #: the last step's inner loss, combined over the batch (0-dim, before the step)


def origin_step(
    loss: Callable[[Tensor], Tensor],
    z0: Tensor,
    steps: int = 1,
    step_size: float = 1.0,
    reduction: InnerReduction = "mean",
    create_graph: bool = True,
    loss_scale: Tensor | None = None,
) -> OriginStep:
    """Latents by gradient descent on `loss`, starting at `z0`: the paper's single step z = z0 - grad by default.

    Args:
        loss: latents (B, nz) -> per-sample inner loss (B,), e.g. `lambda z: (decoder(z) - x).square().flatten(1)
            .sum(1)`.
        z0: where the steps start, (B, nz): zeros are the paper's origin. A tensor that requires no gradient is
            not modified (the steps start from a copy that does); one with a graph (a learnable origin) keeps it.
        steps: gradient steps (1 in the paper).
        step_size: the size of each step (1 in the paper).
        reduction: how the inner loss combines the batch: "mean" (the paper's; each latent then scales with 1/B)
            or "sum" (each latent independent of the batch).
        create_graph: keep the graph of the gradient, so an outer loss of the latents trains through the
            second-order term; False for evaluation, or the detached-GON ablation.
        loss_scale: multiply the inner loss by it and divide the gradient back (fp16's GradScaler scale).

    Returns:
        `OriginStep(latents, inner_loss)`.
    """
    if torch.is_inference_mode_enabled():
        raise UserError(
            "GON-family models take gradients during evaluation; run with trainer.inference_mode: false "
            "(the gon-lightning CLI's default), or outside torch.inference_mode()"
        )
    z, inner = z0, None
    with torch.enable_grad():
        for _ in range(steps):
            if not z.requires_grad:  # the fixed origin, or a later step of an encoding taken without graph
                z = z.detach().requires_grad_()
            per_sample = loss(z)
            inner = per_sample.sum() if reduction == "sum" else per_sample.mean()
            scaled = inner if loss_scale is None else inner * loss_scale
            grad = torch.autograd.grad(scaled, z, create_graph=create_graph)[0]
            if loss_scale is not None:
                grad = grad / loss_scale
            # a leaf start (the fixed origin) carries no parameters: detach it; a learnable origin keeps its graph.
            # When kept, the second-order graph lives in grad.
            z = (z.detach() if z.is_leaf else z) - step_size * grad
    return OriginStep(z, inner)
