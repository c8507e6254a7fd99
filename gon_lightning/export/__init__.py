"""Trained models as self-contained folders, Hugging Face Hub style: `gon-lightning export` writes one,
`gon_lightning.from_pretrained` loads one (a folder, or a Hub repository id).

An export folder holds:
- `model.safetensors`: the model's state_dict (parameters and buffers: the sampling Gaussian too), never a pickle;
- `config.json`: the model's class path and constructor arguments, the gon-lightning version and `EXPORT_FORMAT`;
- `config.yaml`: the training run's config (`gon-lightning fit --config config.yaml` trains it again);
- `samples.png`, `reconstructions.png`: what the model makes (held-out images on top, their reconstructions below);
- `README.md`: a model card with the Hub's YAML front matter (`model-index` holds the run's test metrics and, when
  `gon-lightning evaluate` measured them, its sample-quality figures).

Loading builds the model through its own constructor from `config.json` and loads the weights strictly. A class
outside gon_lightning (a network of your own) is imported only with `trust_remote_code=True`. A local folder needs
safetensors only; Hub ids, the model card and `--push` need huggingface_hub (the `hub` extra).

Its rooms: `folder` writes an export (`export_model`), `pretrained` saves and loads its loadable core, `config` says
what `config.json` holds, `records` finds what the run measured of the checkpoint, `card` writes the model card and
`hub` uploads and downloads.
"""

from gon_lightning.export.card import model_card
from gon_lightning.export.config import EXPORT_FORMAT, model_config
from gon_lightning.export.folder import export_model, held_out_images, write_images
from gon_lightning.export.hub import push_to_hub
from gon_lightning.export.pretrained import from_pretrained, load_weights, save_pretrained
from gon_lightning.export.records import run_folder_of, run_records

__all__ = [
    "EXPORT_FORMAT",
    "export_model",
    "from_pretrained",
    "held_out_images",
    "load_weights",
    "model_card",
    "model_config",
    "push_to_hub",
    "run_folder_of",
    "run_records",
    "save_pretrained",
    "write_images",
]
