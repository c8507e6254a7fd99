"""`gon-lightning encode`: the checkpoint's model encodes every split of a dataset into an encoded folder.

The Trainer's strategy decides where: one device, or every process of a DDP job (the strategy's launcher starts them
as for `fit`), each encoding its share of the shards (`encoding.encode`). Everything that can be refused is refused
before any encoding: a checkpoint without latents, images of another size, probes asked of a dataset without labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gon_lightning.errors import UserError
from gon_lightning.latents import encoding


def run_encode(
    trainer: Any,
    model: Any,
    datamodule: Any,
    out: str,
    ckpt_path: str | None = None,
    image_folder: str | None = None,
    batch_size: int | None = None,
    shard_batches: int = encoding.SHARD_BATCHES,
    probes: bool | None = None,
    weights_only: bool | None = None,
) -> dict[str, Any]:
    """See `GONTrainer.encode`."""
    from gon_lightning.runs import load_checkpoint_file, load_model_weights

    if weights_only is False:
        raise UserError("encode reads checkpoints weights-only: drop --weights_only false")
    if not ckpt_path:
        raise UserError("encode needs --ckpt_path: the checkpoint whose model encodes")
    encoding.check_latent_model(model)
    if image_folder is not None:
        datamodule = folder_datamodule(image_folder, datamodule)
    if datamodule is None:
        raise UserError("encode needs a dataset: the run's own (beside the checkpoint), --data, or --image_folder")
    checkpoint = load_checkpoint_file(ckpt_path)
    trained = tuple((checkpoint.get("hyper_parameters") or {}).get("image_shape") or model.image_shape)
    if tuple(datamodule.dims) != trained:
        raise UserError(
            f"{ckpt_path} holds a model of {trained} images; the dataset gives {tuple(datamodule.dims)}: give the "
            f"data {trained[1]} px and {trained[0]} channel(s) (--data.init_args.image_size, channels)"
        )
    del checkpoint
    load_model_weights(model, ckpt_path)
    out_path = Path(out).expanduser()

    def work() -> dict[str, Any]:
        strategy = trainer.strategy
        strategy.setup_environment()  # under DDP: joins the process group
        world = trainer.world_size
        barrier = strategy.barrier if world > 1 else (lambda: None)
        if trainer.local_rank == 0:
            datamodule.prepare_data()  # the decoded cache, built once per node
        barrier()
        datamodule.setup("fit")
        labelled = all(encoding.split_labels(s) is not None for s in encoding.encoded_splits(datamodule).values())
        if probes and not labelled:
            raise UserError(
                f"--probes: {type(datamodule).__name__}'s images have no labels, so there is nothing to probe; "
                "drop --probes (the latents are encoded without)"
            )
        return encoding.encode(
            model,
            datamodule,
            out_path,
            batch_size=batch_size,
            shard_batches=shard_batches,
            device=strategy.root_device,
            checkpoint=ckpt_path,
            rank=trainer.global_rank,
            world_size=world,
            barrier=barrier,
            probes=probes is not False,
        )

    launcher = trainer.strategy.launcher
    card = launcher.launch(work, trainer=trainer) if launcher is not None else work()
    if trainer.is_global_zero and card:
        print(summary(card, out_path), flush=True)
    return card


def folder_datamodule(image_folder: str, datamodule: Any) -> Any:
    """An ImageFolderDataModule over `image_folder` at the size and batch size of the run's dataset."""
    from gon_lightning.data import ImageFolderDataModule

    if datamodule is None:
        raise UserError("--image_folder is decoded at the size of the run's dataset: give the run's --config")
    return ImageFolderDataModule(
        root=image_folder,
        batch_size=datamodule.batch_size,
        image_size=datamodule.image_size,
        channels=datamodule.channels,
    )


def summary(card: dict[str, Any], out: Path) -> str:
    sizes = ", ".join(f"{n} {split}" for split, n in card["splits"].items())
    lines = [f"encoded {sizes} latents (nz {card['model']['nz']}) into {out}"]
    if card.get("linear_acc") is not None:
        lines.append(
            f"probes (standardised latents, train -> test): linear {100 * card['linear_acc']:.1f}%, "
            f"{card['knn_k']}-NN {100 * card['knn_acc']:.1f}%"
        )
    elif all(card.get("labels", {}).get(split) for split in ("train", "test")):
        lines.append("probes: off (--probes false)")
    else:
        lines.append("probes: the dataset has no labels, so no linear or k-NN accuracy (the latents are written)")
    return "\n".join(lines)
