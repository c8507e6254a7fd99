"""What every model shares: image shape, Adam, reconstruction metrics and the evaluation protocol."""

from __future__ import annotations

import ctypes
import inspect
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.image import PeakSignalNoiseRatio

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require
from gon_lightning.nn import Activation, Norm
from gon_lightning.nn.conv import ConvDecoder, ConvEncoder, hidden_widths
from gon_lightning.nn.networks import NetworkFactory, build_network, check_decoder, check_encoder, recorded_network

NormEval = Literal["batch", "running"]
#: `self.log` options for a value every process already holds the same of (reduced by us, or computed from synced
#: metrics): syncing it keeps it exactly (the max of equal values; a mean of three need not be), and spares
#: Lightning's warning, under DDP, about epoch-level values logged unsynced
SAME_ON_EVERY_PROCESS: dict[str, Any] = {"sync_dist": True, "reduce_fx": "max"}
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def check_sampler_option(option: str, model: Any, sampler: str | None) -> None:
    """Refuse, before any work, a sampler `model` does not offer, in one line naming the option that asked for it."""
    if sampler is None:
        return
    if "sampler" not in inspect.signature(model.sample).parameters:
        raise UserError(f"{type(model).__name__} has no choice of sampler: leave {option} unset")
    try:
        model.checked_sampler(sampler)
    except (UserError, NotImplementedError) as error:
        raise UserError(f"{option}: {error}") from None


def skip_failing_nvml_check() -> None:
    """Undo Lightning's NVML-based CUDA check where NVML cannot be loaded (no NVIDIA driver).

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so `torch.cuda.is_available()` first loads
    libnvidia-ml; without it the load fails, and is retried at every call (Adam's step calls it: about 0.03-0.4
    ms per step on this CPU, with the machine's load) before torch falls back to the CUDA runtime's answer. Where
    the library does not load, that fallback is always the answer, so the check is dropped; anywhere else
    (GPU hosts, ROCm's own path) it stays.
    """
    if os.environ.get(NVML_CHECK) != "1" or torch.version.hip:
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")  # the library torch's NVML check loads
    except OSError:
        del os.environ[NVML_CHECK]


skip_failing_nvml_check()


@contextmanager
def batchnorm_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Let every BatchNorm normalise with the batch's own statistics without touching its running ones.

    This is how the reference scripts evaluated (the model stayed in train mode), so their published
    numbers are only comparable under it (docs/design.md, "BatchNorm at the origin").
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    for m in norms:
        m.training, m.track_running_stats = True, False  # no running stats passed: batch stats, no update
    try:
        yield
    finally:
        for m, (training, tracking) in zip(norms, saved, strict=True):
            m.training, m.track_running_stats = training, tracking


def slerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Spherical interpolation from z_a to z_b (B, nz), endpoints included: (steps, B, nz)."""
    t = torch.linspace(0, 1, steps, device=z_a.device, dtype=z_a.dtype)[:, None, None]
    cos = torch.nn.functional.cosine_similarity(z_a, z_b, dim=1).clamp(-1 + 1e-7, 1 - 1e-7)[:, None]
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    spherical = (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / sin
    linear = (1 - t) * z_a + t * z_b  # where the two are (nearly) parallel, slerp is the straight line
    return torch.where(sin > 1e-4, spherical, linear)


def per_image_sse(x_hat: Tensor, x: Tensor) -> Tensor:
    """Summed squared error per image, over C x H x W: the papers' reconstruction figure."""
    return (x_hat - x).square().flatten(1).sum(1)


def reconstruction_metrics() -> nn.ModuleDict:
    return nn.ModuleDict({"sse": MeanMetric(), "mse": MeanSquaredError(), "psnr": PeakSignalNoiseRatio(data_range=1.0)})


def update_reconstruction_metrics(metrics: nn.ModuleDict, x_hat: Tensor, x: Tensor) -> None:
    metrics["sse"].update(per_image_sse(x_hat, x))
    metrics["mse"].update(x_hat, x)
    metrics["psnr"].update(x_hat, x)


class ImageModel(pl.LightningModule, ABC):
    """Base of every model (abstract: the CLI offers only its concrete subclasses). Subclasses implement
    `training_step`, and `reconstruct` or `encode_images`/`decode_latents` where they have them.

    Each option is declared once, by the class that uses it, and documented there; subclasses pass the options
    they do not use on to their base with `**kwargs` (jsonargparse follows those calls, so `--model.help` lists
    them all). `save_hyperparameters` runs once, here: it records the options of every constructor in the chain.

    Args:
        image_shape: (channels, height, width); linked from the DataModule by the CLI.
        lr: Adam learning rate.
        norm_eval: how BatchNorm layers normalise in validation, test and predict. "batch" uses each
            batch's statistics, the protocol of the reference scripts and therefore of every published
            number; "running" is PyTorch's eval mode (running statistics). Models without BatchNorm
            behave the same under both.
    """

    def __init__(
        self, image_shape: tuple[int, int, int] = (1, 32, 32), lr: float = 2e-4, norm_eval: NormEval = "batch"
    ) -> None:
        super().__init__()
        require(norm_eval in ("batch", "running"), MODEL + "norm_eval", norm_eval, "'batch' or 'running'")
        shape_ok = len(tuple(image_shape)) == 3 and all(isinstance(n, int) and n > 0 for n in image_shape)
        require(shape_ok, MODEL + "image_shape", image_shape, "(channels, height, width), all positive")
        positive(MODEL + "lr", lr)
        with warnings.catch_warnings():
            # a network given as a built module is saved with the state_dict, and the hyperparameters record only its
            # class (`ConvNetModel.make_network`): Lightning's advice to leave it out of them is followed already
            warnings.filterwarnings("ignore", message=r"Attribute '(decoder|encoder)' is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.image_shape = tuple(image_shape)
        self.lr = lr
        self.norm_eval = norm_eval
        self.val_metrics = reconstruction_metrics()
        self.test_metrics = reconstruction_metrics()

    # The generation interface shared by predict and the image callbacks. A model implements what it can;
    # the rest raise NotImplementedError, which callers treat as "this model has no such picture".
    def encode_images(self, x: Tensor) -> Tensor:
        """Latents of images in [0, 1] (the evaluation encoding: no sampling, no graph)."""
        raise NotImplementedError(f"{type(self).__name__} has no latent encoding")

    def decode_latents(self, z: Tensor) -> Tensor:
        """Images in [0, 1] from latents."""
        raise NotImplementedError(f"{type(self).__name__} has no latent decoder")

    #: the sampler names `sample` takes, the model's default first (`models/latent.py` describes them)
    samplers: tuple[str, ...] = ()

    def sample(self, n: int, sampler: str | None = None) -> Tensor:
        """n new images in [0, 1], drawn by `sampler`: one of `samplers`, None for the model's default."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def checked_sampler(self, sampler: str | None) -> str:
        """The sampler `sample(n, sampler)` uses; a name the model does not have is a UserError naming those it has."""
        if not self.samplers:
            raise NotImplementedError(f"{type(self).__name__} cannot sample")
        if sampler is None:
            return self.samplers[0]
        if sampler not in self.samplers:
            raise UserError(
                f"{type(self).__name__} has no sampler {sampler!r}; its samplers: {', '.join(self.samplers)} "
                f"(default {self.samplers[0]})"
            )
        return sampler

    def prepare_sampler(self, sampler: str | None, datamodule: Any = None) -> None:
        """Make `sampler` ready to draw, fitting what it needs from `datamodule`'s training split (a no-op here)."""
        self.checked_sampler(sampler)

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode_latents(self.encode_images(x))

    @abstractmethod
    def training_step(self, x: Tensor, batch_idx: int) -> Tensor: ...

    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Tensor:
        """Images along the spherical interpolation between the latents of x_a and x_b: (steps, B, C, H, W)."""
        z = slerp(self.encode_images(x_a), self.encode_images(x_b), steps)
        return self.decode_latents(z.flatten(0, 1)).unflatten(0, z.shape[:2])

    def compile_targets(self) -> list[str]:
        """Names of the submodules the `CompileModules` callback may compile with torch.compile, in place.

        By default every child module with parameters. Models whose training cannot be compiled (a double
        backward: docs/design.md, "Compile limits") override this to raise a `UserError` saying so.
        """
        return [name for name, child in self.named_children() if any(True for _ in child.parameters())]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    @contextmanager
    def evaluation_protocol(self) -> Iterator[None]:
        if self.norm_eval == "batch":
            with batchnorm_batch_statistics(self):
                yield
        else:
            yield

    # Evaluation metrics are updated every batch and logged once, at the end of the epoch: a `self.log` call costs
    # about a millisecond (see `log_train`), as much as a validation batch of the paper GON on a GPU. Lightning
    # computes (and, across processes, reduces) each logged metric at the epoch's end either way: the same values.
    def evaluation_metrics(self, stage: str) -> nn.ModuleDict:
        """The metrics validation or test updates, by name; logged as `<stage>/<name>` at the epoch's end."""
        return self.val_metrics if stage == "val" else self.test_metrics

    def log_evaluation_metrics(self, stage: str) -> None:
        """Log the metrics this epoch's batches updated (never-updated ones would only log NaN)."""
        self.log_dict({f"{stage}/{name}": m for name, m in self.evaluation_metrics(stage).items() if m.update_count})

    def on_validation_epoch_end(self) -> None:
        self.log_evaluation_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_evaluation_metrics("test")

    def _evaluate(self, x: Tensor, metrics: nn.ModuleDict, stage: str) -> Tensor:
        with self.evaluation_protocol():
            x_hat = self.reconstruct(x)
        update_reconstruction_metrics(metrics, x_hat, x)
        return x_hat

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        self._evaluate(x, self.val_metrics, "val")

    def test_step(self, x: Tensor, batch_idx: int) -> Tensor:
        return self._evaluate(x, self.test_metrics, "test")  # the scored reconstructions, for callbacks

    def predict_step(self, x: Tensor, batch_idx: int) -> Tensor:
        with self.evaluation_protocol():
            return self.reconstruct(x)

    # --- training curves ------------------------------------------------------------------------------
    # `self.log` costs about a millisecond per call (Lightning walks and moves its whole result collection), so
    # per-step values are logged only at the steps Lightning sends to the loggers (`trainer.log_every_n_steps`),
    # and the epoch means come from sums kept on the device: no host synchronisation per step.
    _train_sums: Tensor | None = None  # (loss, sse) summed over this epoch's training images, on the device
    _train_images = 0
    _epoch_means: dict[str, Tensor] | None = None

    def log_train(self, loss: Tensor, x_hat: Tensor, x: Tensor, sse: Tensor | None = None) -> None:
        """Record a training step: `train/loss` and `train/sse` (mean per-image SSE) every
        `trainer.log_every_n_steps` steps, and their epoch means `train/loss_epoch`, `train/sse_epoch`. `sse`: the
        SSE per image where x_hat is not the whole image (a step on sampled pixels); None computes it."""
        n = len(x)
        sse = per_image_sse(x_hat.detach(), x) if sse is None else sse.detach()
        values = torch.stack([loss.detach().float(), sse.mean().float()])
        self._train_sums = values * n if self._train_sums is None else self._train_sums.add_(values, alpha=n)
        self._train_images += n
        trainer = self._trainer
        # Lightning's own "does this step reach the loggers" (private; the same test it applies after the step)
        if trainer is not None and (trainer._logger_connector.should_update_logs or trainer.fast_dev_run):
            self.log_dict({"train/loss": values[0], "train/sse": values[1]}, batch_size=n)

    def on_train_epoch_start(self) -> None:
        self._train_sums, self._train_images, self._epoch_means = None, 0, None

    def train_epoch_means(self) -> dict[str, Tensor]:
        """This epoch's mean training loss and SSE over every image seen (all processes), as 0-dim tensors.

        Read once per epoch: it reduces over processes, so every process calls it (the first call is
        `on_train_epoch_end`, or a callback's before it) and later calls return the same values."""
        if self._epoch_means is None:
            if self._train_sums is None:
                return {}
            sums = torch.cat([self._train_sums, self._train_sums.new_tensor([self._train_images])])
            if self._trainer is not None:
                sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            self._epoch_means = {"train/loss_epoch": sums[0] / sums[2], "train/sse_epoch": sums[1] / sums[2]}
        return self._epoch_means

    def on_train_epoch_end(self) -> None:
        for name, value in self.train_epoch_means().items():
            self.log(name, value, prog_bar=True, **SAME_ON_EVERY_PROCESS)


class ConvNetModel(ImageModel):
    """Base of the models built from the paper's convolutional networks (`gon_lightning.nn.conv`): GON,
    detached GON, V-GON, autoencoder and VAE, on square images of 32 (the paper's), 64, 128 or 256 px. It declares
    the networks' options once; any of the networks may be one of your own instead (docs/extending.md), which
    then takes any image shape.

    Args:
        ngf: network width: the decoder's last hidden layer has ngf channels, the ones before 2 ngf, 4 ngf, ...
            (3 hidden layers at 32 px, one more per doubling of the side; the encoder mirrors it); 16 in the paper.
            Shapes the built-in networks only, as do activation and norm.
        activation: activation of the networks (the paper's ablation: ELU > SELU > ReLU).
        norm: normalisation after each hidden convolution. "batch" is the paper's; "group" or "none" evaluate
            the same in train and eval mode at any batch size (docs/design.md, "BatchNorm at the origin").
        decoder: your own decoder instead of the paper's: a class given by class_path/init_args, called with
            (nz, image_shape) and its init_args, mapping latents (B, nz) to images (B, C, H, W) in [0, 1] (the
            model's loss compares them with the data in [0, 1]); from Python also a built nn.Module. Unset: the
            paper's ConvTranspose2d decoder.
    """

    #: the built-in networks' options and their defaults: refused when changed but no built-in network is built
    BUILT_IN_OPTIONS = {"ngf": 16, "activation": "elu", "norm": "batch"}

    def __init__(
        self,
        ngf: int = 16,
        activation: Activation = "elu",
        norm: Norm = "batch",
        decoder: NetworkFactory | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "ngf", ngf)
        require(activation in ("elu", "relu", "selu"), MODEL + "activation", activation, "'elu', 'relu' or 'selu'")
        require(norm in ("batch", "group", "none"), MODEL + "norm", norm, "'batch', 'group' or 'none'")
        self.ngf = ngf
        self.activation = activation
        self.norm = norm
        self._decoder_option = {"decoder": decoder}  # in a dict: a module given is not a submodule until it is built
        self._built_in_networks = 0

    def _check_built_in_shape(self) -> None:
        _, height, width = self.image_shape
        require(height == width, MODEL + "image_shape", self.image_shape, "square for the convolutional networks")
        if self.norm == "group":  # GroupNorm(min(8, c // 2), c) must divide each width c
            ok = all(c >= 2 and c % min(8, c // 2) == 0 for c in hidden_widths(self.ngf, height))
            needs = "2, 3, 4, 6, 8 or a multiple of 8 with norm 'group' (GroupNorm's groups)"
            require(ok, MODEL + "ngf", self.ngf, needs)

    def make_network(self, name: str, spec: Any, built_in: type[ConvDecoder] | type[ConvEncoder]) -> nn.Module:
        """The model's `name` network ("decoder" or "encoder"): the one `spec` names, checked, or the built-in one.

        Each model calls it where it builds that network (the order of construction decides the initial weights).
        The decoder comes last, so by then it is known whether any built-in network uses ngf, activation and norm.
        """
        option = MODEL + name
        if self.hparams.get(name) is spec:  # given from Python; LightningCLI records the config's class_path/init_args
            self.hparams[name] = recorded_network(spec)  # what checkpoints and exports can rebuild it from
        own = build_network(spec, self.nz, self.image_shape, option)
        if own is None:
            self._check_built_in_shape()
            self._built_in_networks += 1
            channels, height, _ = self.image_shape
            network = built_in(self.nz, self.ngf, channels, height, self.activation, self.norm)
        else:
            check = check_decoder if name == "decoder" else check_encoder
            check(own, self.nz, self.image_shape, option, type(self).__name__)
            network = own
        if name == "decoder" and not self._built_in_networks:
            changed = [key for key, default in self.BUILT_IN_OPTIONS.items() if getattr(self, key) != default]
            if changed:
                verb, pronoun = ("shapes", "it") if len(changed) == 1 else ("shape", "them")
                raise UserError(
                    f"{', '.join(MODEL + key for key in changed)} {verb} the built-in networks only, and this "
                    f"{type(self).__name__} has none (its networks are your own): drop {pronoun}"
                )
        return network

    def make_decoder(self) -> nn.Module:
        """The decoder: the `decoder` option's, or the paper's `ConvDecoder`."""
        return self.make_network("decoder", self._decoder_option["decoder"], ConvDecoder)
