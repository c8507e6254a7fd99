"""Our LightningModules under the Trainer compute the published algorithm, step for step.

`benchmarks/published_loop.py` transcribes the reference scripts (their networks, loops, losses, Adam and
train-mode evaluation) without importing gon_lightning. From the same initial weights and the same batches, 20
optimizer steps of our model under the Lightning Trainer and of that loop must end with the same parameters and
BatchNorm buffers, and evaluating one batch must give the same SSE. The variational models draw their noise from
the global generator, reseeded before every step in both, so both consume the same draws.

Float64 throughout: at the origin every sample is identical, the first BatchNorm sees zero variance and its
gradients are dominated by rounding (float32 and float64 BN-bias gradients differ by 50-100%), so two float32
implementations with a different operation order may drift apart over 20 steps on one CPU and not on another.
In float64 the claim is the mathematics, independent of the kernels a CPU picks.

The negative controls change one thing at a time (the inner reduction, a loss, the BatchNorm protocol, Adam's
betas) and require the comparison to see it: the check can fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import resize

from gon_lightning.models import GON, VAE, ConvAutoencoder, DetachedGON, VariationalGON
from gon_lightning.models import gon as gon_module

ROOT = Path(__file__).resolve().parents[1]
# training batches of 16 keep the test fast (the algorithm is the same at any batch size); the evaluation batch
# is the references' 64, whose statistics BatchNorm normalises with
STEPS, TRAIN_BATCH, EVAL_BATCH = 20, 16, 64
TRAIN_SEED, EVAL_SEED = 1000, 2000
OURS = {"gon": GON, "gon_detached": DetachedGON, "vgon": VariationalGON, "ae": ConvAutoencoder, "vae": VAE}


def load_published_loop():
    spec = importlib.util.spec_from_file_location("published_loop", ROOT / "benchmarks" / "published_loop.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["published_loop"] = module
    spec.loader.exec_module(module)
    return module


published_loop = load_published_loop()


@pytest.fixture(scope="module")
def batches(digits) -> list[torch.Tensor]:
    """STEPS training batches and one evaluation batch of real digits at 32x32, in [0, 1], float64."""
    pixels, _ = digits
    n = STEPS * TRAIN_BATCH
    images = resize(torch.from_numpy(pixels[: n + EVAL_BATCH]).unsqueeze(1), [32, 32], antialias=True)
    images = images.double() / 255
    return [*images[:n].split(TRAIN_BATCH), images[n:]]


class Reseed(pl.Callback):
    """The global generator seeded before every training step and evaluation batch, as the loop does."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        torch.manual_seed(TRAIN_SEED + trainer.global_step)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        torch.manual_seed(EVAL_SEED + batch_idx)


def train_ours(model: pl.LightningModule, batches: list[torch.Tensor], steps: int) -> float:
    """`steps` steps under the Trainer in float64; returns the test SSE of the evaluation batch."""
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        precision="64-true",
        inference_mode=False,  # the GON family takes gradients in evaluation
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Reseed()],
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches[:steps], batch_size=None))
    return trainer.test(model, dataloaders=DataLoader(batches[-1:], batch_size=None), verbose=False)[0]["test/sse"]


def train_loop(name: str, initial: dict, batches: list[torch.Tensor], steps: int) -> tuple[dict, float]:
    """The transcribed published loop from our initial weights; returns its trained state and the evaluation SSE."""
    net = published_loop.load_ours(published_loop.make_network(name).double(), name, initial)
    optim = torch.optim.Adam(lr=published_loop.lr, params=net.parameters())
    for step, x in enumerate(batches[:steps]):
        torch.manual_seed(TRAIN_SEED + step)
        published_loop.train_step(name, net, optim, x)
    trained = {k: v.clone() for k, v in net.state_dict().items()}  # before its train-mode evaluation counts batches
    torch.manual_seed(EVAL_SEED)
    errors, _ = published_loop.evaluate_batch(name, net, batches[-1])  # the network left in train mode
    return trained, errors.mean().item()


def compare(name: str, model: pl.LightningModule, batches: list[torch.Tensor], steps: int = STEPS):
    """(ours, loop) final states, our parameter names, and (ours, loop) evaluation SSE."""
    initial = {k: v.double() for k, v in model.state_dict().items()}
    ours_sse = train_ours(model, batches, steps)
    theirs, loop_sse = train_loop(name, initial, batches, steps)
    ours = {k: v for k, v in model.state_dict().items() if not k.startswith(published_loop.OURS_ONLY)}
    return ours, {k: theirs[published_loop.reference_name(name, k)] for k in ours}, (ours_sse, loop_sse)


def build(name: str, **kwargs) -> pl.LightningModule:
    torch.manual_seed(0)
    return OURS[name](nz=256, ngf=16, **kwargs)


@pytest.mark.equality
@pytest.mark.parametrize("name", list(OURS))
def test_our_training_is_the_published_loop(name, batches):
    ours, theirs, (ours_sse, loop_sse) = compare(name, build(name), batches)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours_sse == pytest.approx(loop_sse, rel=1e-5)
    initial = build(name).state_dict()
    # 20 steps of Adam moved every weight: the comparison is not of two untouched copies
    assert all(not torch.equal(v, initial[k].double()) for k, v in ours.items() if k.endswith("weight"))


class BetasModel(GON):
    """A GON whose Adam has other betas: the optimizer drifting."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, betas=(0.5, 0.999))


def summed_loss(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).square().sum(1).flatten(1).sum(1)  # pixels summed, not averaged: a loss drifting


@pytest.mark.parametrize("mutation", ["inner_reduction", "loss", "norm_eval", "adam_betas"])
def test_the_comparison_sees_one_change(mutation, batches, monkeypatch):
    torch.manual_seed(0)
    if mutation == "inner_reduction":
        model = GON(inner_reduction="sum")
    elif mutation == "loss":
        monkeypatch.setattr(gon_module, "paper_loss", summed_loss)
        model = GON()
    elif mutation == "norm_eval":
        model = GON(norm_eval="running")  # PyTorch's eval mode instead of the references' batch statistics
    else:
        model = BetasModel()
    ours, theirs, (ours_sse, loop_sse) = compare("gon", model, batches, steps=3)
    same_parameters = all(torch.allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6) for k in ours)
    same_sse = ours_sse == pytest.approx(loop_sse, rel=1e-5)
    assert not (same_parameters and same_sse)
    if mutation == "norm_eval":  # training untouched: only the evaluation differs
        assert same_parameters and not same_sse


@pytest.mark.parametrize(
    ("name", "expected"), [("gon", 303_697), ("vgon", 435_281), ("ae", 607_649), ("vae", 739_233)]
)  # the published parameter counts (nz 256, ngf 16, one channel)
def test_the_transcribed_networks_have_the_published_sizes(name, expected):
    network = published_loop.make_network(name)
    assert sum(p.numel() for p in network.parameters()) == expected
    assert sum(p.numel() for p in build(name).parameters()) == expected


@pytest.mark.parametrize("name", list(OURS))
def test_one_seed_initialises_ours_and_the_transcription_alike(name):
    # so a run of each with the same seed is a pair (benchmarks/reproduce.py's same-seed table)
    ours = build(name).state_dict()
    torch.manual_seed(0)
    theirs = published_loop.make_network(name).state_dict()
    for key, value in ours.items():
        if not key.startswith(published_loop.OURS_ONLY):
            assert torch.equal(value, theirs[published_loop.reference_name(name, key)]), key
