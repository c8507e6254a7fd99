"""Samplers of the models that have latents: what `sample(n, sampler)` decodes to make new images.

- `prior`: N(0, I), the prior the variational models (VAE, V-GON) were trained towards.
- `gaussian`: a full-covariance Gaussian fitted to training latents. The GON family tracks it during training
  (`OriginModel`: the latents of the last epoch, free); the autoencoders and the V-GON fit it here, lazily.
- `gmm`: a full-covariance Gaussian mixture fitted by EM (scikit-learn) to the latents of the training split,
  the "ex-post density estimation" of Ghosh et al. 2020 ("From variational to deterministic autoencoders").

The lazily fitted densities are fitted when first asked for, from up to `FIT_IMAGES` training images encoded with
the current weights (a fixed subset of the whole split, so every DDP rank fits the same density), and kept as
buffers: a checkpoint written afterwards holds them and restores them. A fit remembers a fingerprint of the
weights it encoded with; once the weights have changed (training went on) the next request refits. docs/
gon_family.md ("Samplers") has the measured cost.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from gon_lightning.errors import MODEL, UserError, positive_int
from gon_lightning.models.base import ImageModel

FIT_IMAGES = 10_000  # training images encoded for a lazy fit (all of a smaller split)
GMM_CANDIDATES = (1, 2, 5, 10)  # components compared by BIC when gmm_components is None
FIT_SEED = 0  # the fit's own seed: subset, encoding noise and EM initialisation; the global RNG is left alone
PARTS = ("weights", "means", "scales", "fingerprint")  # a fitted density's buffers: f"{sampler}_{part}"


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
    #: the detached latents of the current training batch, set by `training_step` for callbacks to read in
    #: `on_train_batch_end` (the online linear probe, an online prior); None before the first step
    step_latents: Tensor | None = None

    def __init__(self, gmm_components: int | None = 10, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gmm_components is not None:
            positive_int(MODEL + "gmm_components", gmm_components)
        self.gmm_components = gmm_components

    @torch.no_grad()
    def sample(self, n: int, sampler: str | None = None) -> Tensor:
        name = self.checked_sampler(sampler)
        z = self.sample_latents(n, name)
        with self.evaluation_protocol():
            return self.decode_latents(z.to(self.dtype))

    def sample_latents(self, n: int, sampler: str) -> Tensor:
        """n latents drawn by `sampler` (a checked name), to be decoded by `decode_latents`."""
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
        parts = [torch.stack([p.double().sum(), p.double().square().sum()]) for p in self.parameters()]
        return torch.cat(parts).detach() if parts else torch.zeros(0, dtype=torch.float64)

    @staticmethod
    def _fingerprint_matches(stored: Tensor, current: Tensor) -> bool:
        return stored.shape == current.shape and torch.allclose(stored.to(current), current, rtol=1e-9, atol=1e-12)

    def fitted_sampler_buffers(self) -> set[str]:
        """The state_dict keys a fitted sampler adds: present only once it is fitted, of the fit's size."""
        return {f"{sampler}_{part}" for sampler in self.lazy_samplers for part in PARTS}

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
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
