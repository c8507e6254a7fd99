"""Lightning's Trainer with gon-lightning's own subcommands beside fit, validate, test and predict.

LightningCLI makes a subcommand of each Trainer method it is told about: the method's signature becomes the
subcommand's options (documented by its docstring) and the CLI hands it the configured model and DataModule. So a
gon-lightning subcommand is a method here that delegates to the module doing the work, and one entry in
`SUBCOMMANDS`; `gon_lightning.cli` wires nothing per subcommand. The Trainer's loops are Lightning's, untouched.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule, Trainer

from gon_lightning.latents.encoding import SHARD_BATCHES
from gon_lightning.metrics import NEAREST_K


class GONTrainer(Trainer):
    #: gon-lightning's subcommands, each with the method arguments the CLI fills itself (LightningCLI's skip sets)
    SUBCOMMANDS: dict[str, set[str]] = {
        "evaluate": {"model", "datamodule"},
        "export": {"model", "datamodule"},
        "encode": {"model", "datamodule"},
    }

    def predict(  # type: ignore[override]
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
    ) -> Any:
        """Lightning's predict; given a learned prior's checkpoint, the predictions of the model it was trained for,
        sampling through the prior, on the model's own data (`gon_lightning.priors.pair`)."""
        from gon_lightning.models.latent import LatentModel
        from gon_lightning.priors.base import LatentPrior
        from gon_lightning.priors.online import PRIORS
        from gon_lightning.priors.pair import model_with_prior

        if isinstance(model, LatentPrior) and ckpt_path:
            model, datamodule, _ = model_with_prior(model, ckpt_path)
            ckpt_path = None  # loaded: the model's weights and the prior's
        elif (
            isinstance(model, LatentModel)
            and ckpt_path
            and {getattr(c, "sampler", None) for c in self.callbacks} & {*PRIORS}
        ):
            # a learned prior's sampler is named: the priors the checkpoint carries (trained online), before the
            # callbacks' setup checks the name against the model
            model.adopt_priors_of(ckpt_path)
        return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)

    def evaluate(
        self,
        model: LightningModule,
        datamodule: LightningDataModule | None = None,
        ckpt_path: str | None = None,
        image_folder: str | None = None,
        num_samples: int | None = None,
        extractor: str | None = None,
        extractor_weights: str | None = None,
        sampler: str | None = None,
        nearest_k: int = NEAREST_K,
        save_features: bool = False,
        out: str | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Score how good a model's samples (or a folder of images) are against the training split.

        The Fréchet and kernel distances, precision, recall, density and coverage, with the test split's own figures
        beside them as the floor, written to `sample_quality.json` (docs/sample_quality.md).

        Args:
            ckpt_path: the checkpoint whose model draws the samples (`last`: the newest run of this model and data);
                a learned prior's checkpoint scores the model it was trained for, drawing through the prior, against
                that model's own data (no other option needed).
            image_folder: a folder of images to score instead (every image file under it, decoded like
                ImageFolderDataModule's, at the dataset's size and channels).
            num_samples: images scored: samples drawn (default 10,000, or the training split's size when smaller),
                or the first N files of `image_folder` (default all).
            extractor: the features: `inception` (FID's Inception-v3), `lenet` or `resnet` (classifiers trained on
                the dataset's labels); default the DataModule's (`lenet` for MNIST-like data, else `inception`).
            extractor_weights: a weights file for the extractor instead of its default one (Inception-v3 in
                torch-fidelity's layout, or a classifier file written by gon-lightning).
            sampler: the model's sampler (`model.sample(n, sampler=...)`); default the model's own.
            nearest_k: k of the k-nearest-neighbour balls of precision, recall, density and coverage.
            save_features: also write real_features.npy and fake_features.npy beside the result.
            out: the folder for the result; default the checkpoint's run folder, or a new run folder for `image_folder`.
            weights_only: the checkpoint is read with `torch.load(weights_only=True)`, as every other command reads
                it; false is refused (an option of every subcommand, so a run's config.yaml serves this one too).
        """
        from gon_lightning.evaluation import evaluate
        from gon_lightning.priors.base import LatentPrior
        from gon_lightning.priors.pair import model_with_prior

        loaded = isinstance(model, LatentPrior) and ckpt_path is not None
        if loaded:  # a prior's checkpoint: the samples of the model it was trained for, against that model's data
            model, datamodule, _ = model_with_prior(model, ckpt_path)
        return evaluate(self, model, datamodule, ckpt_path, image_folder, num_samples, extractor, extractor_weights,
                        sampler, nearest_k, save_features, out, weights_only, loaded)  # fmt: skip

    def export(
        self,
        model: Any,
        datamodule: Any,
        out: str,
        ckpt_path: str | None = None,
        push: str | None = None,
        num_images: int = 8,
        weights_only: bool | None = None,
    ) -> None:
        """Export a trained model as a self-contained folder, Hugging Face Hub style.

        The folder holds model.safetensors, config.json, the run's config.yaml, samples and reconstructions, and a
        README.md model card (docs/extending.md, "Share a trained model").
        `gon-lightning export --ckpt_path CKPT --out DIR` reads the model and data options from the run's
        config.yaml beside CKPT's checkpoints/ folder; it leaves no run folder. Load it with
        `gon_lightning.from_pretrained(DIR)`.

        Args:
            out: the export folder to write (new, empty, or an earlier export, which is replaced).
            ckpt_path: the checkpoint to export.
            push: also upload the folder to this Hugging Face Hub model repository (`user/name`; needs
                huggingface_hub and a login, `hf auth login`).
            num_images: held-out test images whose reconstructions the folder shows (0: none, and no data read).
            weights_only: how the checkpoint is read: always weights only (no pickled code runs), so only true or
                unset are accepted (stated so a run's config.yaml, which has it, can be given).
        """
        from gon_lightning import runs
        from gon_lightning.errors import UserError
        from gon_lightning.export import export_model

        if weights_only is False:
            raise UserError("export reads checkpoints weights-only: drop --weights_only false")

        from gon_lightning.priors.base import LatentPrior
        from gon_lightning.priors.pair import model_with_prior

        if isinstance(model, LatentPrior) and ckpt_path:  # the model it was trained for, carrying it
            prior_ckpt = ckpt_path
            model, datamodule, model_ckpt = model_with_prior(model, ckpt_path)
            export_model(model, datamodule, str(model_ckpt), out, push, num_images, prior_ckpt=prior_ckpt)
        else:
            export_model(model, datamodule, ckpt_path, out, push, num_images)
        runs.discard_unfinished_run()  # a folder made for this command holds nothing: the export is in `out`

    def encode(
        self,
        model: Any,
        datamodule: Any,
        out: str,
        ckpt_path: str | None = None,
        image_folder: str | None = None,
        batch_size: int | None = None,
        shard_batches: int = SHARD_BATCHES,
        probes: bool | None = None,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Encode every split of a dataset with a checkpoint's model: the latents as a dataset (docs/latents.md).

        `gon-lightning encode --ckpt_path CKPT --out DIR` reads the model and data options from the run's config.yaml
        beside CKPT's checkpoints/ folder (another `--data` may replace its dataset). DIR gets each split's latents,
        labels and per-image reconstruction SSE as Parquet shards, and `latents.json`: the checkpoint and its
        sha256, the inner steps, step size, reduction, norm_eval and batch size used, the dataset, split sizes and
        the command; with the linear and k-NN probes' accuracies where the dataset has labels. Under DDP
        (--trainer.devices N) every process encodes its share; the latents are the same however many encode.

        Args:
            out: the folder to write (new, empty, or an earlier encoded folder, which is replaced).
            ckpt_path: the checkpoint whose model encodes (a model with latents: GON family, autoencoder, VAE).
            image_folder: encode the images under this folder instead (ImageFolderDataModule at the run's image
                size, channels and batch size; class subfolders give labels).
            batch_size: images per batch; default the DataModule's, which the model trained with (GON latents
                depend on it: docs/latents.md, "What a latent depends on").
            shard_batches: batches per Parquet shard: what memory holds at once.
            probes: the linear and k-NN probes (default: whenever the dataset has labels; true refuses a dataset
                without labels; false skips them).
            weights_only: checkpoints are read weights only: only true or unset are accepted.
        """
        from gon_lightning import runs
        from gon_lightning.latents.command import run_encode

        card = run_encode(self, model, datamodule, out, ckpt_path, image_folder, batch_size, shard_batches, probes,
                          weights_only)  # fmt: skip
        runs.discard_unfinished_run()  # a folder made for this command holds nothing: the latents are in `out`
        return card
