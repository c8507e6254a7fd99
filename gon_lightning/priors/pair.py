"""A prior's checkpoint as one generative model: the image model it was trained for, with the prior attached.

A post-hoc prior's checkpoint records the model checkpoint its latents came from (path and sha256,
`base.SOURCE_KEY`). `evaluate`, `predict` and `export` given a prior's checkpoint rebuild that model from its own run
(the run's `config.yaml` beside its `checkpoints/` folder names the model and the data), check that the file is
still the one the prior was trained on, and attach the prior: the samples are the model's, drawn through the prior,
and the reference data is the model's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gon_lightning.errors import UserError
from gon_lightning.latents.encoding import load_run, sha256_of
from gon_lightning.priors.base import LatentPrior


def load_prior(prior: LatentPrior, ckpt_path: str | Path) -> dict[str, Any]:
    """The prior checkpoint's weights and source into `prior`; returns the source record."""
    from gon_lightning.runs import load_model_weights

    load_model_weights(prior, ckpt_path)
    source = prior.source  # read from the checkpoint by the prior's on_load_checkpoint
    if not source.get("checkpoint"):
        raise UserError(
            f"prior checkpoint {ckpt_path} does not name the model checkpoint it was trained for: train it with "
            "`gon-lightning fit --config prior --data.ckpt_path <model checkpoint>`"
        )
    return source


def checked_source(source: dict[str, Any], ckpt_path: str | Path) -> Path:
    """The source model checkpoint, refused in one line if it is gone or is no longer the file the prior learned."""
    path = Path(source["checkpoint"])
    if not path.is_file():
        raise UserError(
            f"prior checkpoint {ckpt_path} was trained on the latents of {path}, which no longer exists: put it back, "
            "or train a prior on the checkpoint you have"
        )
    if source.get("sha256") and sha256_of(path) != source["sha256"]:
        raise UserError(
            f"prior checkpoint {ckpt_path} was trained on the latents of {path} (sha256 {source['sha256'][:12]}), "
            "but that file has changed since: train the prior again on it"
        )
    return path


def model_with_prior(prior: LatentPrior, ckpt_path: str | Path) -> tuple[Any, Any, Path]:
    """(the image model with `prior` attached, the model's DataModule, the model checkpoint) of a prior checkpoint."""
    source = load_prior(prior, ckpt_path)
    model_ckpt = checked_source(source, ckpt_path)
    model, data = load_run(model_ckpt)
    if not hasattr(model, "attach_prior"):
        raise UserError(f"{model_ckpt} holds a {type(model).__name__}, which has no latents for a prior")
    model.attach_prior(prior)
    return model, data, model_ckpt
