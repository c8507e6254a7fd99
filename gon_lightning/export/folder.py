"""`gon-lightning export`: the export folder of a checkpoint, written whole, with the images the model makes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from gon_lightning.errors import UserError
from gon_lightning.export.card import DATASETS, model_card
from gon_lightning.export.config import CARD, CONFIG, RUN_CONFIG, model_config
from gon_lightning.export.hub import push_to_hub
from gon_lightning.export.pretrained import save_pretrained
from gon_lightning.export.records import probe_record, run_folder_of, run_records


def held_out_images(datamodule: Any, n: int) -> Tensor:
    """The first n images of the DataModule's test split, as the model sees them (the DataModule's own batch
    transform: uint8 to [0, 1])."""
    datamodule.prepare_data()
    datamodule.setup("test")
    batches, count = [], 0
    for batch in datamodule.test_dataloader():
        batches.append(datamodule.on_after_batch_transfer(batch, 0))
        count += len(batches[-1])
        if count >= n:
            break
    return torch.cat(batches)[:n].cpu()


def write_images(model: Any, images: Tensor | None, folder: Path, num_samples: int = 16) -> list[str]:
    """`samples.png` (when the model samples) and `reconstructions.png` (when given held-out images: them over their
    reconstructions), under the model's evaluation protocol and a fixed seed."""
    from torchvision.utils import save_image

    written = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with model.evaluation_protocol():
            try:
                save_image(model.sample(num_samples).float(), folder / "samples.png", nrow=8)
                written.append("samples.png")
            except NotImplementedError:
                pass
            if images is not None and len(images):
                reconstructions = model.reconstruct(images.to(model.device, model.dtype)).detach().float().cpu()
                save_image(torch.cat([images, reconstructions]), folder / "reconstructions.png", nrow=len(images))
                written.append("reconstructions.png")
    return written


def export_model(
    model: Any,
    datamodule: Any,
    ckpt_path: str | None,
    out: str,
    push: str | None = None,
    num_images: int = 8,
    prior_ckpt: str | None = None,
) -> Path:
    """Write the export folder `out` of the checkpoint `ckpt_path` (see the module docstring); `push` uploads it to
    that Hub repository. The folder is written beside `out` and moved into place whole. With `prior_ckpt` (a learned
    prior's checkpoint, already attached to `model`) the model carries that prior, and the card shows the sample
    quality measured on the prior's checkpoint."""
    from gon_lightning.runs import check_model_checkpoint, load_checkpoint_file

    if not ckpt_path:
        raise UserError("export needs --ckpt_path: the checkpoint to export")
    if num_images < 0:
        raise UserError(f"--num_images must be >= 0, got {num_images}")
    try:
        import huggingface_hub  # noqa: F401 (the model card's front matter)
    except ImportError as error:
        raise UserError(
            "export writes its model card with huggingface_hub: pip install 'gon-lightning[hub]'"
        ) from error
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / CONFIG).is_file())):
        raise UserError(f"--out {out_dir} exists and is not an export folder: give a new or empty folder")
    path = Path(ckpt_path)
    checkpoint = load_checkpoint_file(path)
    check_model_checkpoint(path, checkpoint, model)
    priors = list(getattr(model, "priors", {}).values())
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    for prior in priors if prior_ckpt else []:  # the model checkpoint has none: the prior's run gave it
        model.attach_prior(prior)
    model.eval()
    config = model_config(model)
    run_dir = run_folder_of(path, checkpoint)
    metrics, quality, notes = run_records(run_dir, path)
    if prior_ckpt:  # the samples are drawn through the prior: its run measured them
        prior_path = Path(prior_ckpt)
        _, quality, prior_notes = run_records(prior_path.parent.parent, prior_path)
        quality = quality if not prior_notes else {}
        notes += prior_notes
    probes, probe_notes = probe_record(run_dir, path)
    notes += probe_notes
    run_config_file = run_dir / RUN_CONFIG if run_dir is not None else None
    run_config = yaml.safe_load(run_config_file.read_text()) if run_config_file and run_config_file.is_file() else None
    images = held_out_images(datamodule, num_images) if num_images else None
    dataset = DATASETS.get(type(datamodule).__name__) if datamodule is not None else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # as a folder made with mkdir: mkdtemp's is private to its owner
    try:
        save_pretrained(model, staging)
        if run_config is not None:
            shutil.copyfile(run_config_file, staging / RUN_CONFIG)
        written = write_images(model, images, staging)
        card = model_card(
            config,
            model,
            dataset,
            run_config,
            checkpoint,
            metrics,
            quality,
            notes,
            written,
            push or str(out_dir),
            probes,
        )
        (staging / CARD).write_text(card)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"exported {path} to {out_dir}: {', '.join(sorted(p.name for p in out_dir.iterdir()))}")
    for note in notes:
        print(f"left out of the model card: {note}")
    if push:
        push_to_hub(out_dir, push)
    return out_dir
