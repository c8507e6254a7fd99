"""Samplers of the models that have latents: what `sample(n, sampler)` decodes to make new images.

- `prior`: N(0, I), the prior the variational models (VAE, V-GON) were trained towards.
- `gaussian`: a full-covariance Gaussian fitted to training latents. The GON family tracks it during training
  (`OriginModel`: the latents of the last epoch, free); the autoencoders and the V-GON fit it here, lazily.
- `gmm`: a full-covariance Gaussian mixture fitted by EM (scikit-learn) to the latents of the training split,
  the "ex-post density estimation" of Ghosh et al. 2020 ("From variational to deterministic autoencoders").
- `diffusion`, `flow`: learned priors (`gon_lightning.priors`) attached with `attach_prior`, held as submodules
  (`priors`), so the state_dict, checkpoints and exports carry them; an attached prior is the default sampler.

The lazily fitted densities are fitted when first asked for, from up to `FIT_IMAGES` training images encoded with
the current weights (a fixed subset of the whole split, so every DDP rank fits the same density), and kept as
buffers: a checkpoint written afterwards holds them and restores them. A fit remembers a fingerprint of the
weights it encoded with; once the weights have changed (training went on) the next request refits. docs/
gon_family.md ("Samplers") has the measured cost.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn

from gon_lightning.errors import MODEL, UserError, positive_int
from gon_lightning.models.base import ImageModel

FIT_IMAGES = 10_000  # training images encoded for a lazy fit (all of a smaller split)
GMM_CANDIDATES = (1, 2, 5, 10)  # components compared by BIC when gmm_components is None
FIT_SEED = 0  # the fit's own seed: subset, encoding noise and EM initialisation; the global RNG is left alone
PARTS = ("weights", "means", "scales", "fingerprint")  # a fitted density's buffers: f"{sampler}_{part}"
PRIORS = "priors"  # the submodule holding attached learned priors, by sampler name
#: the buffer that says how to rebuild the attached priors (JSON of their class paths and options, as uint8): it
#: travels in the state_dict, so every way of loading weights (Lightning, safetensors) rebuilds them first
PRIOR_SPECS = "priors_spec"
PRIOR_PACKAGE = "gon_lightning.priors."  # the only code a state_dict's prior spec may name


class SamplerNotReady(UserError, NotImplementedError):
    """A sampler that needs a fit it cannot make here. A UserError for commands (one line); a NotImplementedError
    for the image panels, which skip a picture the model cannot draw (yet)."""


def fit_mixture(latents: Tensor, components: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """(weights (k,), means (k, d), scales (k, d, d) with covariance = S S^T) of a full-covariance mixture, float64.

    One component is the sample mean and covariance (eigh: singular where there are fewer latents than
    dimensions). More are fitted by scikit-learn's EM from a k-means++ start seeded with `FIT_SEED`, on latents
    divided by their overall standard deviation (so the covariance regulariser is relative to the latents' scale:
    the GON's latents are ~1e-3); `components` None picks the number in `GMM_CANDIDATES` with the lowest BIC.
    """
    z = latents.detach().to("cpu", torch.float64)
    if components == 1:
        mean = z.mean(0)
        cov = torch.cov(z.T, correction=1).reshape(z.shape[1], z.shape[1])
        values, vectors = torch.linalg.eigh(0.5 * (cov + cov.T))
        return torch.ones(1, dtype=torch.float64), mean[None], (vectors * values.clamp_min(0).sqrt())[None]
    from sklearn.mixture import GaussianMixture  # imported when used: a second's import for every CLI call

    scale = z.std().clamp_min(1e-30).item()
    data = (z / scale).numpy()
    candidates = GMM_CANDIDATES if components is None else (components,)
    best, best_bic = None, math.inf
    for k in candidates:
        if k > len(data):
            continue
        gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-6, init_params="k-means++", random_state=FIT_SEED)
        gmm.fit(data)
        bic = gmm.bic(data) if len(candidates) > 1 else 0.0
        if bic < best_bic:
            best, best_bic = gmm, bic
    if best is None:
        raise UserError(f"{MODEL}gmm_components={components} is more than the {len(data)} latents fitted")
    weights = torch.from_numpy(best.weights_).double()
    means = torch.from_numpy(best.means_).double() * scale
    scales = torch.linalg.cholesky(torch.from_numpy(best.covariances_).double()) * scale
    return weights / weights.sum(), means, scales


def sample_mixture(weights: Tensor, means: Tensor, scales: Tensor, n: int) -> Tensor:
    """n draws (float64) from the mixture, with the global generator: a component, then mean + S eps."""
    component = torch.multinomial(weights, n, replacement=True)
    eps = torch.randn(n, means.shape[1], dtype=means.dtype, device=means.device)
    return means[component] + torch.einsum("nij,nj->ni", scales[component], eps)


class LatentModel(ImageModel):
    """Base of the models with a latent space (abstract): GON family, autoencoder, VAE. Subclasses implement
    `encode_images` and `decode_latents`, and set `nz`; `samplers` names what `sample` offers, the default first.

    Args:
        gmm_components: Gaussians in the `gmm` sampler's mixture (10, Ghosh et al.'s choice); None chooses among 1,
            2, 5 and 10 by BIC, which in 256 dimensions picks 1 (the `gaussian`) until there are far more latents
            than 10,000 (each full covariance has 32,896 parameters; docs/gon_family.md, "Samplers").
    """

    samplers: tuple[str, ...] = ("gaussian", "gmm")
    #: the samplers fitted here on demand (the GON family tracks its own `gaussian` while training)
    lazy_samplers: tuple[str, ...] = ("gaussian", "gmm")
    nz: int
    #: the detached latents of the current training batch, in the space `decode_latents` takes, set by every
    #: `training_step` for callbacks to read in `on_train_batch_end` (the online prior, an online probe)
    step_latents: Tensor | None = None

    def __init__(self, gmm_components: int | None = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gmm_components is not None:
            positive_int(MODEL + "gmm_components", gmm_components)
        self.gmm_components = gmm_components
        self.priors = nn.ModuleDict()  # empty until a prior is attached: no state, no parameters
        self._default_prior: str | None = None

    # --- learned priors -------------------------------------------------------------------------------------
    def attach_prior(self, prior: nn.Module, default: bool = True) -> None:
        """Carry `prior` (a `gon_lightning.priors.LatentPrior`) as the sampler it names (`diffusion`, `flow`),
        replacing one of that name; `default`: `sample(n)` draws through it when no sampler is named."""
        name = prior.sampler_name
        if prior.nz != self.nz:
            raise UserError(
                f"a {type(prior).__name__} of latent size {prior.nz} cannot be attached to a {type(self).__name__} "
                f"of latent size {self.nz}: a prior of another latent size"
            )
        if not type(prior).__module__.startswith(PRIOR_PACKAGE):
            raise UserError(f"{type(prior).__name__} is not one of gon_lightning.priors' priors")
        self.priors[name] = prior.to(self.latent_device())
        if default or self._default_prior not in self.priors:
            self._default_prior = name
        self._priors_changed()

    def detach_prior(self, name: str) -> None:
        if name in self.priors:
            del self.priors[name]
        self._priors_changed()

    def latent_device(self) -> torch.device:
        parameter = next(self.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def _priors_changed(self) -> None:
        """Offer the attached priors as samplers (the default one first), record how to rebuild them, and keep them
        out of DistributedDataParallel's reach (they are trained by their own optimiser, or not at all)."""
        if self._default_prior not in self.priors:
            self._default_prior = next(iter(self.priors), None)
        names = sorted(self.priors, key=lambda name: name != self._default_prior)
        own = type(self).samplers
        self.samplers = (*names[:1], *own, *names[1:]) if names and self._default_prior else own
        if not self.priors:
            self._buffers.pop(PRIOR_SPECS, None)
        else:
            specs = {"default": self._default_prior, "priors": {name: self.priors[name].spec() for name in names}}
            encoded = torch.tensor(list(json.dumps(specs, sort_keys=True).encode()), dtype=torch.uint8)
            self.register_buffer(PRIOR_SPECS, encoded.to(self.latent_device()))
        ignored = [f"{PRIORS}.{key}" for key in self.priors.state_dict()] + [PRIOR_SPECS] * bool(self.priors)
        self._ddp_params_and_buffers_to_ignore = ignored  # DistributedDataParallel's own switch

    def prior_specs(self) -> dict[str, Any]:
        """{"default": name, "priors": {name: {class_path, init_args}}} of the attached priors ({} if none)."""
        buffer = self._buffers.get(PRIOR_SPECS)
        return json.loads(bytes(buffer.cpu().tolist()).decode()) if buffer is not None else {}

    def optional_state_key(self, key: str) -> bool:
        """Whether a state_dict key may be present or absent in a checkpoint of this model's options: a fitted
        sampler's buffers and attached priors (loading adopts them)."""
        return key in self.fitted_sampler_buffers() or key == PRIOR_SPECS or key.startswith(PRIORS + ".")

    def own_parameters(self) -> Iterator[nn.Parameter]:
        """The image model's parameters, without its attached priors' (which have their own optimiser)."""
        return (p for name, p in self.named_parameters() if not name.startswith(PRIORS + "."))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.own_parameters(), lr=self.lr)

    def compile_targets(self) -> list[str]:
        return [name for name in super().compile_targets() if name != PRIORS]

    @torch.no_grad()
    def sample(self, n: int, sampler: str | None = None) -> Tensor:
        return self.decode_samples(self.sample_latents(n, self.checked_sampler(sampler)))

    @torch.no_grad()
    def decode_samples(self, z: Tensor) -> Tensor:
        """The images of drawn latents, decoded as `sample` decodes them (under the evaluation protocol)."""
        with self.evaluation_protocol():
            return self.decode_latents(z.to(self.dtype))

    def sample_latents(self, n: int, sampler: str) -> Tensor:
        """n latents drawn by `sampler` (a checked name), to be decoded by `decode_latents`."""
        if sampler in self.priors:
            return self.priors[sampler].sample(n)
        if sampler == "prior":
            return torch.randn(n, self.nz, device=self.device, dtype=self.dtype)
        self.fit_sampler(sampler, refit=False)
        weights, means, scales, _ = (getattr(self, f"{sampler}_{part}") for part in PARTS)
        return sample_mixture(weights, means, scales, n)

    # --- lazily fitted densities --------------------------------------------------------------------------
    def prepare_sampler(self, sampler: str | None, datamodule: Any = None) -> None:
        """Fit `sampler`'s density from `datamodule`'s training split (or the Trainer's DataModule), unless a fit
        made with the current weights is at hand. `sample` does this itself when it has a DataModule to ask."""
        name = self.checked_sampler(sampler)
        split = self._training_split(datamodule)
        if split is None:
            self.fit_sampler(name, refit=False)
        else:
            self.fit_sampler(name, *split, refit=False)

    def sampler_fitted(self, sampler: str) -> bool:
        return getattr(self, f"{sampler}_weights", None) is not None

    def fit_sampler(self, sampler: str, images: Tensor | None = None, batch_size: int = 64, refit: bool = True) -> None:
        """Fit `sampler`'s density to the latents of training images (N, C, H, W), uint8 or in [0, 1], encoded in
        batches of `batch_size`; None: the training split of the Trainer's DataModule, in its batch size. With `refit`
        False, a fit made with the current weights is kept.

        The first `FIT_IMAGES` of a fixed permutation of the images are encoded, in batches of the DataModule's
        batch size (the GON's latents and BatchNorm's statistics depend on it), in eval mode under `norm_eval`,
        inside a forked RNG seeded with `FIT_SEED`: the fit is a function of the weights and images alone, and
        fitting during training leaves the run as it was, bit for bit.
        """
        if sampler not in self.lazy_samplers:
            return
        fingerprint = self.weights_fingerprint()
        if not refit and self.sampler_fitted(sampler):
            if self._fingerprint_matches(getattr(self, f"{sampler}_fingerprint"), fingerprint):
                return
            if images is None and self._training_split() is None:
                rank_zero_warn(
                    f"{type(self).__name__}'s {sampler!r} sampler was fitted with other weights and no training "
                    "split is at hand to refit it: sampling from the old fit"
                )
                return
        if images is None:
            images, batch_size = self._training_split() or (None, batch_size)
            if images is None:
                raise SamplerNotReady(
                    f"{type(self).__name__}'s {sampler!r} sampler is fitted to the latents of the training split: "
                    f"sample with its DataModule attached (a Trainer fitting, testing or evaluating it), or call "
                    f"model.fit_sampler({sampler!r}, images) first"
                )
        latents = self.training_latents(images, batch_size)
        components = 1 if sampler == "gaussian" else self.gmm_components
        fitted = (*fit_mixture(latents, components), fingerprint.cpu())
        for part, value in zip(PARTS, fitted, strict=True):
            self.register_buffer(f"{sampler}_{part}", value.to(self.device))

    def _training_split(self, datamodule: Any = None) -> tuple[Tensor, int] | None:
        if datamodule is None and self._trainer is not None:
            datamodule = getattr(self._trainer, "datamodule", None)
        try:
            if not datamodule.datasets:
                datamodule.setup("fit")
            return datamodule.splits["train"], datamodule.batch_size  # ImageDataModule's (mapped) uint8 array
        except (AttributeError, KeyError, TypeError):  # no DataModule, not set up, or streamed
            return None

    @torch.no_grad()
    def training_latents(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Latents of up to `FIT_IMAGES` of `images`, whole batches only (as training sees them)."""
        count = min(len(images), FIT_IMAGES) // batch_size * batch_size
        if count < 2:
            raise UserError(f"fitting a sampler needs two or more training images, in whole batches: got {len(images)}")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(FIT_SEED))[:count]
        rows = order.sort().values  # in file order: a memory-mapped split reads forward
        parts = []
        with self._fitting_state():
            for start in range(0, count, batch_size):
                x = images[rows[start : start + batch_size]].to(self.device)
                x = x.float().div_(255) if x.dtype == torch.uint8 else x.to(self.dtype)
                parts.append(self.encode_images(x).detach().double())
        return torch.cat(parts)

    @contextmanager
    def _fitting_state(self) -> Iterator[None]:
        devices = [self.device] if self.device.type == "cuda" else []
        was_training = self.training
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(FIT_SEED)
            self.eval()
            try:
                with self.evaluation_protocol():
                    yield
            finally:
                self.train(was_training)

    def weights_fingerprint(self) -> Tensor:
        """Sum and sum of squares of every parameter tensor (float64): changes whenever training changes them."""
        parts = [torch.stack([p.double().sum(), p.double().square().sum()]) for p in self.own_parameters()]
        return torch.cat(parts).detach() if parts else torch.zeros(0, dtype=torch.float64)

    @staticmethod
    def _fingerprint_matches(stored: Tensor, current: Tensor) -> bool:
        return stored.shape == current.shape and torch.allclose(stored.to(current), current, rtol=1e-9, atol=1e-12)

    def fitted_sampler_buffers(self) -> set[str]:
        """The state_dict keys a fitted sampler adds: present only once it is fitted, of the fit's size."""
        return {f"{sampler}_{part}" for sampler in self.lazy_samplers for part in PARTS}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        self._adopt_priors(state_dict, prefix)
        # a fitted density is registered when it is fitted: adopt a checkpoint's (any size of mixture), and drop
        # a fit of ours that the loaded weights do not come with
        for sampler in self.lazy_samplers:
            for part in PARTS:
                name, key = f"{sampler}_{part}", prefix + f"{sampler}_{part}"
                if key in state_dict:
                    self.register_buffer(name, torch.empty_like(state_dict[key], device=self.device))
                elif name in self._buffers:
                    del self._buffers[name]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def adopt_priors_of(self, ckpt_path: str) -> None:
        """Attach the priors a checkpoint file carries (their weights load with the checkpoint), so that their samplers
        can be named before Lightning restores it: its callbacks' setup, which checks a sampler, comes first."""
        from gon_lightning.runs import LIGHTNING_CKPT_PATHS, load_checkpoint_file

        if ckpt_path not in LIGHTNING_CKPT_PATHS:
            self._adopt_priors(load_checkpoint_file(ckpt_path).get("state_dict") or {}, "")

    def _adopt_priors(self, state_dict: dict, prefix: str) -> None:
        """Rebuild the priors a state_dict carries (from its spec buffer) before their weights load, and drop
        attached priors it does not carry: the loaded model is the one saved, priors included."""
        encoded = state_dict.get(prefix + PRIOR_SPECS)
        specs = json.loads(bytes(encoded.cpu().tolist()).decode()) if encoded is not None else {}
        wanted = specs.get("priors", {})
        for name in list(self.priors):
            if name not in wanted:
                del self.priors[name]
        for name, spec in wanted.items():
            current = self.priors[name] if name in self.priors else None  # noqa: SIM401 (a ModuleDict: no .get)
            if current is None or current.spec() != spec:
                self.priors[name] = build_prior(spec).to(self.latent_device())
        self._default_prior = specs.get("default")
        self._priors_changed()


def build_prior(spec: dict[str, Any]) -> nn.Module:
    """A prior from its spec ({"class_path", "init_args"}); only gon_lightning.priors' classes are built."""
    class_path = spec.get("class_path", "")
    module, _, name = class_path.rpartition(".")
    if not class_path.startswith(PRIOR_PACKAGE):
        raise UserError(f"the weights name a prior {class_path!r} outside gon_lightning.priors: refused")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"the weights name a prior {class_path!r} this gon-lightning does not have") from error
    with torch.random.fork_rng(devices=[]):  # its initial weights are overwritten: leave the caller's RNG alone
        return cls(**spec.get("init_args", {}))
