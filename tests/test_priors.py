"""Learned priors over latents (gon_lightning.priors): the densities on plain tensors, attaching them to every model
with latents, the training-step hook, and the online prior."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gon_lightning.errors import UserError
from gon_lightning.evaluation import check_sampler
from gon_lightning.models import GON, VAE, ConvAutoencoder, DetachedGON, ImplicitGON, VariationalGON
from gon_lightning.models.base import check_sampler_option
from gon_lightning.priors import FlowMatchingPrior, NormalizingFlowPrior, OnlinePrior

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step`:UserWarning"),
    pytest.mark.usefixtures("one_thread"),
]

NZ = 4
TINY_MODELS = {
    "GON": lambda: GON(nz=NZ, ngf=4),
    "DetachedGON": lambda: DetachedGON(nz=NZ, ngf=4),
    "VariationalGON": lambda: VariationalGON(nz=NZ, ngf=4),
    "ImplicitGON": lambda: ImplicitGON(nz=NZ, widths=[16, 16], image_shape=(1, 32, 32)),
    "ConvAutoencoder": lambda: ConvAutoencoder(nz=NZ, ngf=4),
    "VAE": lambda: VAE(nz=NZ, ngf=4),
}


def tiny_diffusion(**kw) -> FlowMatchingPrior:
    return FlowMatchingPrior(**{"latent_size": NZ, "hidden": 32, "depth": 2, "time_dim": 8, "sample_steps": 8, **kw})


def tiny_flow(**kw) -> NormalizingFlowPrior:
    return NormalizingFlowPrior(**{"latent_size": NZ, "hidden": 16, "transforms": 2, **kw})


def two_clusters(n: int = 512) -> torch.Tensor:
    """Latents far from N(0, I) in scale and shape: two clusters, std ~300 (a GON's are ~350)."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-1.0] * NZ, [1.0] * NZ]) * 300
    which = torch.randint(0, 2, (n,), generator=generator)
    return centres[which] + 30 * torch.randn(n, NZ, generator=generator) + 7


@pytest.fixture(scope="module")
def images(digits) -> torch.Tensor:
    """64 real digits, 32x32, in [0, 1]."""
    return F.pad(torch.from_numpy(digits[0][:64])[:, None], (2, 2, 2, 2)).float() / 255


@pytest.mark.parametrize("make", [tiny_diffusion, tiny_flow], ids=["diffusion", "flow"])
def test_prior_learns_latents_and_samples_in_their_space(make) -> None:
    torch.manual_seed(0)
    z = two_clusters()
    prior = make(lr=3e-3)
    prior.set_statistics(z)
    assert torch.allclose(prior.unstandardise(prior.standardise(z)), z, atol=1e-3)
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = prior.loss(prior.standardise(z))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.8 * sum(losses[:10])
    samples = prior.sample(400)
    assert samples.shape == (400, NZ)
    # drawn in the latents' own space: both clusters, at their scale
    assert (samples[:, 0] > 0).float().mean().item() == pytest.approx(0.5, abs=0.2)
    assert samples.abs().mean().item() == pytest.approx(z.abs().mean().item(), rel=0.3)


def test_flow_reports_bits_per_dimension_of_the_latent_space() -> None:
    prior = tiny_flow()
    z = two_clusters()
    prior.set_statistics(z)
    bpd = prior.bits_per_dim(z)
    # the standardisation's Jacobian is included: the same latents scaled by 2 cost exactly one bit more per dimension
    scaled = tiny_flow()
    scaled.load_state_dict(prior.state_dict())
    scaled.set_statistics(2 * z)
    assert torch.allclose(scaled.bits_per_dim(2 * z), bpd + 1, atol=1e-4)


def test_untrained_prior_cannot_sample() -> None:
    with pytest.raises(NotImplementedError, match="not been trained"):
        tiny_diffusion().sample(2)


def test_solvers_and_steps_are_options() -> None:
    prior = tiny_diffusion(solver="heun")
    prior.set_statistics(two_clusters())
    torch.manual_seed(3)
    heun = prior.sample(5)
    prior.solver = "euler"
    torch.manual_seed(3)
    assert not torch.equal(prior.sample(5), heun)
    with pytest.raises(UserError, match="solver"):
        tiny_diffusion(solver="rk4")
    with pytest.raises(UserError, match="sample_steps"):
        tiny_diffusion(sample_steps=0)


def test_dropout_masks_training_only_and_leaves_the_noise_stream_alone() -> None:
    x = torch.randn(16, NZ, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    plain = tiny_diffusion()
    torch.manual_seed(0)
    dropping = tiny_diffusion(dropout=0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), dropping.parameters(), strict=True))

    def loss(prior: FlowMatchingPrior) -> torch.Tensor:
        return prior.loss(x, generator=torch.Generator().manual_seed(1))

    assert not torch.equal(loss(plain), loss(dropping))  # training: units dropped
    # its masks are drawn after the noise and the times: the same straight paths, so the loss without them is the
    # plain prior's, and evaluation (validation, sampling) drops nothing
    dropping.eval()
    assert torch.equal(loss(plain), loss(dropping))
    for prior in (plain, dropping):
        prior.set_statistics(two_clusters())
    torch.manual_seed(3)
    drawn = plain.sample(4)
    torch.manual_seed(3)
    assert torch.equal(dropping.sample(4), drawn)
    with pytest.raises(UserError, match="dropout"):
        tiny_diffusion(dropout=1.0)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_attached_prior_is_a_sampler_carried_by_the_state_dict(name, images) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS[name]()
    own = model.samplers
    prior = tiny_diffusion()
    prior.set_statistics(two_clusters())
    model.attach_prior(prior)
    assert model.samplers == ("diffusion", *own)  # the default now
    flow = tiny_flow()
    flow.set_statistics(two_clusters())
    model.attach_prior(flow, default=False)
    assert model.samplers == ("diffusion", *own, "flow")
    model.eval()
    drawn = {}
    for sampler in ("diffusion", "flow"):
        torch.manual_seed(1)
        drawn[sampler] = model.sample(3, sampler)
    # a fresh model of the same options adopts the priors from the state_dict alone, and samples the same, bit for bit
    torch.manual_seed(5)
    fresh = TINY_MODELS[name]()
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert fresh.samplers == model.samplers
    for sampler, images_drawn in drawn.items():
        torch.manual_seed(1)
        assert torch.equal(fresh.sample(3, sampler), images_drawn)
    # and a state_dict without priors drops them again
    fresh.load_state_dict(TINY_MODELS[name]().state_dict())
    assert fresh.samplers == own and not len(fresh.priors)


def test_priors_stay_out_of_the_model_s_optimiser_fingerprint_and_ddp() -> None:
    model = GON(nz=NZ, ngf=4)
    before = model.weights_fingerprint()
    params = len(list(model.configure_optimizers().param_groups[0]["params"]))
    model.attach_prior(tiny_diffusion())
    assert len(list(model.configure_optimizers().param_groups[0]["params"])) == params
    assert torch.equal(model.weights_fingerprint(), before)
    ignored = set(model._ddp_params_and_buffers_to_ignore)
    assert {name for name, _ in model.named_parameters() if name.startswith("priors.")} <= ignored


def test_a_prior_of_another_latent_size_is_refused() -> None:
    with pytest.raises(UserError, match="another latent size"):
        GON(nz=NZ + 1, ngf=4).attach_prior(tiny_diffusion())


def test_a_sampler_the_model_lacks_is_refused_before_any_work() -> None:
    model = GON(nz=NZ, ngf=4)
    with pytest.raises(UserError, match=r"--sampler: GON has no sampler 'diffusion'; its samplers: gaussian, gmm"):
        check_sampler(model, "diffusion")
    model.attach_prior(tiny_flow())
    check_sampler_option("--sampler", model, "flow")
    with pytest.raises(UserError, match=r"no sampler .diffusion.*default flow"):
        check_sampler_option("--images.sampler", model, "diffusion")


def test_a_spec_naming_code_outside_the_priors_is_refused() -> None:
    model = GON(nz=NZ, ngf=4)
    model.attach_prior(tiny_diffusion())
    state = model.state_dict()
    spec = model.prior_specs()
    spec["priors"]["diffusion"]["class_path"] = "os.system"
    state["priors_spec"] = torch.tensor(list(json.dumps(spec).encode()), dtype=torch.uint8)
    with pytest.raises(UserError, match=r"outside gon_lightning\.priors"):
        GON(nz=NZ, ngf=4).load_state_dict(state)


class Latents(pl.Callback):
    """The step's latents, and (for the models with an encoder network, which has no side effects) the encoding of
    the batch with the weights the step used."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []
        self.encoded: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if isinstance(pl_module, ConvAutoencoder):
            with torch.no_grad():
                self.encoded.append(pl_module.encode_images(batch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(pl_module.step_latents.clone())


def fit(model: pl.LightningModule, images: torch.Tensor, *callbacks: pl.Callback, steps: int = 3) -> None:
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        accelerator="cpu",
    )
    trainer.fit(model, DataLoader(images, batch_size=16, shuffle=True))


@pytest.mark.parametrize("name", TINY_MODELS)
def test_every_training_step_leaves_its_latents_for_callbacks(name, images) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS[name]()
    seen = Latents()
    fit(model, images, seen, steps=2)
    assert len(seen.seen) == 2
    assert all(z.shape == (16, NZ) and not z.requires_grad for z in seen.seen)
    # in the space the samplers draw in: the encoder's latents (the VAE's posterior means)
    for step, encoded in zip(seen.seen, seen.encoded, strict=False):
        assert torch.allclose(step, encoded, atol=1e-6)


@pytest.mark.parametrize("name", ["GON", "VAE"])
def test_online_prior_trains_beside_the_model_without_changing_it(name, images) -> None:
    torch.manual_seed(0)
    plain = TINY_MODELS[name]()
    fit(plain, images, steps=4)
    torch.manual_seed(0)
    model = TINY_MODELS[name]()
    online = OnlinePrior(prior_args={"hidden": 32, "depth": 2, "time_dim": 8, "sample_steps": 4}, warmup_steps=0)
    prior_before = None

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            nonlocal prior_before
            prior_before = [p.detach().clone() for p in pl_module.priors["diffusion"].parameters()]

    fit(model, images, online, Snapshot(), steps=4)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("prior")}
    assert own.keys() == plain.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(own[key], value), key  # the model's training is the same, bit for bit
    prior = model.priors["diffusion"]
    assert any(not torch.equal(a, b) for a, b in zip(prior_before, prior.parameters(), strict=True))
    assert bool(prior.standardised) and model.samplers[0] == "diffusion"
    assert model.sample(2).shape == (2, 1, 32, 32)


@pytest.mark.equality
@pytest.mark.slow
def test_prior_fitted_under_ddp_equals_one_process_on_the_global_batch(tmp_path) -> None:
    """Two CPU processes (gloo) at batch 8 each against one at batch 16, float64: the same prior after 3 steps (with
    dropout: its masks are the global batch's too)."""
    worker = Path(__file__).with_name("prior_ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(worker.parent.parent), os.environ.get("PYTHONPATH", "")])}
    for devices, batch in ((1, 16), (2, 8)):
        done = subprocess.run(
            [sys.executable, str(worker), str(tmp_path / f"{devices}.pt"), str(devices), str(batch)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    one, ddp = (torch.load(tmp_path / f"{devices}.pt", weights_only=True) for devices in (1, 2))
    fresh = FlowMatchingPrior(latent_size=4, hidden=16, depth=2, time_dim=8).double().state_dict()
    assert one.keys() == ddp.keys()
    for key in one:
        assert torch.allclose(one[key], ddp[key], rtol=1e-10, atol=1e-12), key
        if key.startswith("velocity") and key.endswith("weight"):
            assert not torch.allclose(one[key], fresh[key])  # it trained
