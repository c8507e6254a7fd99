"""Lightning's Trainer with gon-lightning's own subcommands beside fit, validate, test and predict.

LightningCLI makes a subcommand of each Trainer method it is told about: the method's signature becomes the
subcommand's options (documented by its docstring) and the CLI hands it the configured model and DataModule. So a
gon-lightning subcommand is a method here that delegates to the module doing the work, and one entry in
`SUBCOMMANDS`; `gon_lightning.cli` wires nothing per subcommand. The Trainer's loops are Lightning's, untouched.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning import Trainer


class GONTrainer(Trainer):
    #: gon-lightning's subcommands, each with the method arguments the CLI fills itself (LightningCLI's skip sets)
    SUBCOMMANDS: dict[str, set[str]] = {"export": {"model", "datamodule"}}

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

        export_model(model, datamodule, ckpt_path, out, push, num_images)
        runs.discard_unfinished_run()  # a folder made for this command holds nothing: the export is in `out`
