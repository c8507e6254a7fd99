"""The GON: parameter counts, the origin step, the evaluation protocol and that it learns."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from gon_lightning.data import MNISTDataModule
from gon_lightning.errors import UserError
from gon_lightning.models import GON


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("nz", "channels", "expected"), [(32, 1, 74_321), (256, 1, 303_697), (256, 3, 304_211)]
)  # docs/design.md, "The origin step" (reference sizes)
def test_parameter_counts(nz, channels, expected):
    assert n_parameters(GON(nz=nz, ngf=16, image_shape=(channels, 32, 32))) == expected


@pytest.mark.equality
def test_latent_is_minus_the_gradient_at_the_origin():
    torch.manual_seed(0)
    model = GON(nz=8, ngf=4, norm="none").double()
    x = torch.rand(5, 1, 32, 32, dtype=torch.float64)
    z = model.encode(x, create_graph=False)

    def inner(z0: torch.Tensor) -> torch.Tensor:  # the paper's loss, written out independently
        return ((model.decoder(z0) - x) ** 2).sum(1).mean()

    expected = -torch.func.grad(inner)(torch.zeros(5, 8, dtype=torch.float64))
    torch.testing.assert_close(z, expected)


def test_detached_latent_drops_the_second_order_term():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 32, 32)
    grads = []
    for detach in (False, True):
        torch.manual_seed(0)
        model = GON(nz=8, ngf=4, detach_latent=detach)
        z = model.encode(x, create_graph=not detach)
        loss, _ = model.latent_loss(z, x)
        loss.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.equality
def test_batch_summed_inner_loss_makes_latents_batch_independent():
    """In float64: equality across batch sizes must not rest on the CPU's kernels summing in the same order."""
    torch.manual_seed(0)
    x = torch.rand(8, 1, 32, 32, dtype=torch.float64)
    summed = GON(nz=8, ngf=4, norm="group", inner_reduction="sum").double()
    torch.testing.assert_close(summed.encode(x[:2], False), summed.encode(x, False)[:2])
    mean = GON(nz=8, ngf=4, norm="group").double()  # the paper's mean: latents scale with 1 / batch size
    torch.testing.assert_close(mean.encode(x[:2], False) / 4, mean.encode(x, False)[:2])


@pytest.mark.equality
def test_batch_protocol_uses_batch_statistics_and_leaves_running_ones():
    torch.manual_seed(0)
    model = GON(nz=8, ngf=4)
    x = torch.rand(6, 1, 32, 32)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with model.evaluation_protocol():
        evaluated = model.reconstruct(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.decoder.net[1].training  # eval mode restored
    model.train()
    torch.testing.assert_close(evaluated, model.reconstruct(x))  # identical to the references' train mode


def test_evaluation_refuses_inference_mode():
    with torch.inference_mode(), pytest.raises(UserError, match="inference_mode: false"):
        GON(nz=8, ngf=4).encode(torch.rand(2, 1, 32, 32), False)


def test_conv_models_need_a_known_size(tmp_path):
    with pytest.raises(UserError, match=r"data\.image_size to one of 32, 64, 128, 256"):
        GON(image_shape=(1, 28, 28))


class _Record(pl.Callback):
    def __init__(self) -> None:
        self.sse: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.sse.append(trainer.callback_metrics["train/sse"].item())


def test_gon_training_reduces_sse(mnist_root):
    pl.seed_everything(0)
    record = _Record()
    trainer = pl.Trainer(
        max_steps=60,
        log_every_n_steps=1,  # per-step values reach callback_metrics only at logging steps
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        inference_mode=False,
        callbacks=[record],
    )
    trainer.fit(GON(nz=32, ngf=8, lr=2e-3), MNISTDataModule(root=mnist_root, batch_size=32, download=False))
    first, last = sum(record.sse[:5]) / 5, sum(record.sse[-5:]) / 5
    assert last < 0.5 * first, (first, last)
