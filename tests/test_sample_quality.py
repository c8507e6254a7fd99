"""Sample quality: the maths of every figure, the extractors, the `evaluate` command and the SampleQuality callback."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_args import base_args, only_run
from image_fixtures import photo_folder
from torchvision.io import encode_png

from gon_lightning.cli import main
from gon_lightning.data import ImageFolderDataModule, MNIST5kDataModule
from gon_lightning.errors import UserError
from gon_lightning.metrics import (
    extract,
    figure_names,
    frechet_distance,
    kernel_distance,
    load_extractor,
    precision_recall_density_coverage,
    reference_features,
    score_samples,
)
from gon_lightning.metrics import extractors as extractors_module
from gon_lightning.metrics.extractors import SHIPPED_WEIGHTS, file_sha256, train_classifier

LENET_MNIST5K = SHIPPED_WEIGHTS[("lenet", "MNIST5kDataModule")]


def exact_gaussian_set(mean: torch.Tensor, cov: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n points whose sample mean and (n - 1)-normalised covariance are exactly `mean` and `cov`."""
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    whitening = torch.linalg.cholesky(torch.linalg.inv(z.T @ z / (n - 1)))
    return mean + (z @ whitening) @ torch.linalg.cholesky(cov).T


def closed_form_fd(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), with symmetric square roots (eigh): another route
    than torchmetrics' eigenvalues of C1 C2."""

    def sqrtm(c):
        values, vectors = torch.linalg.eigh(c)
        return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T

    root = sqrtm(cov1)
    return float((mu1 - mu2).square().sum() + torch.trace(cov1 + cov2 - 2 * sqrtm(root @ cov2 @ root)))


def random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_equals_the_closed_form_and_is_zero_for_a_set_against_itself() -> None:
    d = 6
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    diag1, diag2 = torch.linspace(0.5, 2, d, dtype=torch.float64), torch.linspace(3, 1, d, dtype=torch.float64)
    a = exact_gaussian_set(mu1, torch.diag(diag1), 500, 0)
    b = exact_gaussian_set(mu2, torch.diag(diag2), 700, 1)
    # commuting covariances: ||mu1 - mu2||^2 + sum (sqrt(s1) - sqrt(s2))^2
    expected = float((mu1 - mu2).square().sum() + (diag1.sqrt() - diag2.sqrt()).square().sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    cov1, cov2 = random_cov(d, 2), random_cov(d, 3)
    a, b = exact_gaussian_set(mu1, cov1, 400, 4), exact_gaussian_set(mu2, cov2, 400, 5)
    assert frechet_distance(a, b) == pytest.approx(closed_form_fd(mu1, cov1, mu2, cov2), rel=1e-8)
    assert abs(frechet_distance(a, a)) < 1e-9
    assert abs(frechet_distance(a.float(), a.float())) < 1e-5  # float32 features are scored in float64


def test_kernel_distance_is_near_zero_within_a_distribution_and_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1500, 8, generator=g), torch.randn(1500, 8, generator=g)
    same_mean, same_std = kernel_distance(a, b, subsets=20, subset_size=500)
    shifted_mean, shifted_std = kernel_distance(a, b + 0.5, subsets=20, subset_size=500)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert shifted_mean > 10 * abs(same_mean) and shifted_mean > 5 * shifted_std
    assert kernel_distance(a, b + 0.5, subsets=20, subset_size=500) == (shifted_mean, shifted_std)  # bit for bit
    state = torch.get_rng_state()
    kernel_distance(a, b, subsets=2, subset_size=100)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone


def direct_prdc(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The papers' definitions on full distance matrices (prdc's formulas, with closed balls)."""
    real, fake = real.double(), fake.double()
    real_radii = torch.cdist(real, real).kthvalue(k + 1, dim=1).values
    fake_radii = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values
    cross = torch.cdist(real, fake)  # (real, fake)
    inside = cross <= real_radii[:, None]
    return {
        "precision": inside.any(0).double().mean().item(),
        "recall": (cross <= fake_radii[None, :]).any(1).double().mean().item(),
        "density": inside.sum(0).double().mean().item() / k,
        "coverage": (cross.min(1).values <= real_radii).double().mean().item(),
    }


@pytest.mark.parametrize("block_elements", [7, 1000, 1 << 23])  # one row per block, a few rows, all at once
def test_precision_recall_density_coverage_match_a_direct_computation(block_elements: int) -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(120, 5, generator=g), torch.randn(90, 5, generator=g) * 1.3 + 0.4
    got = precision_recall_density_coverage(real, fake, nearest_k=3, block_elements=block_elements)
    assert got == pytest.approx(direct_prdc(real, fake, 3), abs=1e-12)


def test_identical_sets_and_samples_of_one_distribution() -> None:
    g = torch.Generator().manual_seed(2)
    real = torch.randn(2000, 16, generator=g)
    k = 5
    same = precision_recall_density_coverage(real, real.clone(), nearest_k=k)
    # each real ball holds its own copy and its k neighbours (prdc's strict < gives 0 where radii are 0)
    assert same == pytest.approx({"precision": 1.0, "recall": 1.0, "density": (k + 1) / k, "coverage": 1.0})
    twins = torch.zeros(50, 4)  # every point the same: radius 0, still inside its closed ball
    assert precision_recall_density_coverage(twins, twins)["coverage"] == 1.0
    other = precision_recall_density_coverage(real, torch.randn(2000, 16, generator=g), nearest_k=k)
    assert other["density"] == pytest.approx(1.0, abs=0.1)
    assert other["coverage"] == pytest.approx(1 - 0.5**k, abs=0.03)  # Naeem et al.'s expectation for M = N
    assert other["precision"] > 0.6 and other["recall"] > 0.6


def test_a_mode_collapsed_set_has_high_precision_and_low_recall() -> None:
    g = torch.Generator().manual_seed(3)
    real = torch.randn(1000, 8, generator=g)
    collapsed = real[:5].repeat_interleave(200, 0) + 0.01 * torch.randn(1000, 8, generator=g)
    scores = precision_recall_density_coverage(real, collapsed)
    assert scores["precision"] > 0.95
    assert scores["recall"] < 0.05 and scores["coverage"] < 0.05


def test_figures_are_named_for_their_extractor() -> None:
    assert figure_names("inception") == {"fd": "fid", "kd_mean": "kid_mean", "kd_std": "kid_std"}
    assert figure_names("lenet")["fd"] == "fd_lenet"
    g = torch.Generator().manual_seed(4)
    scores = score_samples(torch.randn(300, 4, generator=g), torch.randn(100, 4, generator=g), "lenet")
    assert set(scores) == {"fd_lenet", "kd_mean_lenet", "kd_std_lenet", "precision", "recall", "density", "coverage"}
    with pytest.raises(UserError, match="nearest_k=5 needs more than 5"):
        precision_recall_density_coverage(torch.randn(5, 2), torch.randn(5, 2))


@pytest.fixture(scope="module")
def mnist5k(tmp_path_factory: pytest.TempPathFactory) -> MNIST5kDataModule:
    datamodule = MNIST5kDataModule(root=tmp_path_factory.mktemp("mnist5k"))
    datamodule.setup("fit")
    return datamodule


@pytest.fixture(scope="module")
def lenet(mnist5k: MNIST5kDataModule):
    return load_extractor("lenet", mnist5k)


def test_the_shipped_lenet_is_mnist5ks_default_and_its_features_are_cached(mnist5k, lenet) -> None:
    assert mnist5k.extractor == "lenet" and lenet.name == "lenet" and lenet.num_features == 84
    assert lenet.sha256 == file_sha256(LENET_MNIST5K)
    assert lenet.info["test_accuracy"] > 0.95 and lenet.info["trained_on"] == "MNIST5kDataModule"
    features = reference_features(mnist5k, "test", lenet)
    cached = next((Path(mnist5k.cache_path) / "features").glob("lenet-*/test.npy"))
    assert features.shape == (1000, 84) and torch.equal(torch.from_numpy(np.load(cached)), features)
    assert torch.equal(reference_features(mnist5k, "test", lenet), features)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    from torchvision.transforms.v2.functional import gaussian_blur as blur

    return blur(images, kernel_size=[9, 9], sigma=[sigma, sigma])


def test_fd_rises_monotonically_with_noise_and_blur_on_real_digits(mnist5k, lenet) -> None:
    reference = reference_features(mnist5k, "train", lenet)
    test = mnist5k.splits["test"].float() / 255
    g = torch.Generator().manual_seed(5)
    noisy = [frechet_distance(reference, extract(lenet, (test + s * torch.randn(test.shape, generator=g)).clamp(0, 1)))
             for s in (0.0, 0.1, 0.2, 0.4)]  # fmt: skip
    blurred = [frechet_distance(reference, extract(lenet, gaussian_blur(test, s))) for s in (0.5, 1.0, 1.5, 2.5)]
    assert noisy == sorted(noisy) and noisy[-1] > 10 * noisy[0]
    assert blurred == sorted(blurred) and blurred[-1] > 10 * blurred[0]


def test_classifier_training_is_seeded_and_unlabelled_data_is_refused(mnist5k, tmp_path, monkeypatch) -> None:
    images, labels = mnist5k.splits["train"][:256], mnist5k.labels["train"][:256]
    first, accuracy = train_classifier("resnet", images, labels, images[:64], labels[:64], steps=3, batch_size=16)
    second, _ = train_classifier("resnet", images, labels, images[:64], labels[:64], steps=3, batch_size=16)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    assert 0 <= accuracy <= 1

    flat = photo_folder(tmp_path / "flat", 80, classes=("",))
    unlabelled = ImageFolderDataModule(flat, batch_size=16, image_size=32)
    assert unlabelled.extractor == "inception"
    with pytest.raises(UserError, match=r"no class labels.*use --extractor inception"):
        load_extractor("lenet", unlabelled)
    folder = ImageFolderDataModule(photo_folder(tmp_path / "pets", 80), batch_size=16, image_size=32)
    monkeypatch.setattr(extractors_module, "TRAIN_STEPS", 2)
    trained = load_extractor("lenet", folder)  # trained now on the folder's labels and cached, then read back
    path = Path(folder.cache_path) / "extractors" / "lenet.safetensors"
    assert trained.sha256 == file_sha256(path) and trained.info["steps"] == 2 and trained.channels == 3
    assert load_extractor("lenet", folder).sha256 == trained.sha256
    with pytest.raises(UserError, match="unknown extractor 'vgg'"):
        load_extractor("vgg", folder)


def random_inception_weights(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A state_dict of torch-fidelity's Inception-v3 layout with random values (built without any download)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fidelity

    with monkeypatch.context() as patch:
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(torch.nn.Module, "load_state_dict", lambda self, state, *a, **k: None)
        network = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(network.state_dict(), path)
    return path


def test_inception_loads_weights_given_by_path_and_says_where_missing_ones_go(tmp_path, monkeypatch) -> None:
    weights = random_inception_weights(tmp_path / "inception.pth", monkeypatch)
    inception = load_extractor("inception", weights=weights)
    assert inception.sha256 == file_sha256(weights) and inception.num_features == 2048
    grey = torch.rand(2, 1, 28, 28)
    features = inception(grey)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert torch.equal(features, inception(grey.expand(-1, 3, -1, -1)))  # grey is repeated to RGB
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(UserError, match="not Inception-v3 weights"):
        load_extractor("inception", weights=bad)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache, and no network

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as error:
        load_extractor("inception")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "--extractor_weights" in message and "--extractor lenet" in message


INCEPTION_CACHE = Path(torch.hub.get_dir()) / "checkpoints" / extractors_module.INCEPTION_URL.rsplit("/", 1)[1]


@pytest.mark.skipif(not INCEPTION_CACHE.is_file(), reason="the Inception-v3 weights are not in torch's hub cache")
def test_real_inception_features_give_torchmetrics_fid() -> None:
    """Where the real weights are present: our FID equals torchmetrics' own FID with TF's resize."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(6)
    real = (torch.rand(24, 3, 32, 32, generator=g) * 255).round().to(torch.uint8)
    fake = (torch.rand(24, 3, 32, 32, generator=g) ** 2 * 255).round().to(torch.uint8)
    inception = load_extractor("inception")
    ours = frechet_distance(extract(inception, real), extract(inception, fake))
    theirs = FrechetInceptionDistance(feature=2048, antialias=False)
    theirs.set_dtype(torch.float64)
    theirs.update(real, real=True)
    theirs.update(fake, real=False)
    assert ours == pytest.approx(float(theirs.compute()), rel=1e-4)


# --- the evaluate command ---------------------------------------------------------------------------------------


def evaluate_args(root: Path, runs: Path, *extra: str) -> list[str]:
    args = base_args(root, runs, subcommand="evaluate")
    args = [a for a in args if not a.startswith("--trainer.limit_")]
    return [*args, "--extractor=lenet", f"--extractor_weights={LENET_MNIST5K}", *extra]


@pytest.fixture
def trained_run(mnist_root: Path, tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs))
    return only_run(runs)


def test_evaluate_writes_the_figures_beside_the_checkpoint_bit_for_bit(mnist_root, tmp_path, trained_run, capsys):
    runs = tmp_path / "runs"
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    main(evaluate_args(mnist_root, runs, f"--ckpt_path={ckpt}", "--num_samples=40", "--save_features=true"))
    result = json.loads((trained_run / "sample_quality.json").read_text())
    printed = capsys.readouterr().out
    assert "fd_lenet" in printed and "floor" in printed and "sample_quality.json" in printed
    names = ["fd_lenet", "kd_mean_lenet", "kd_std_lenet", "precision", "recall", "density", "coverage"]
    names += ["copy_ratio", "copying_z"]
    assert result["figures"] == names and all(isinstance(result[name], float) for name in names)
    assert result["num_samples"] == 40 and result["sampler"] == "default" and result["nearest_k"] == 5
    assert result["checkpoint"] == str(ckpt.resolve()) and result["model"] == "GON" and result["image_folder"] is None
    assert result["extractor"] == "lenet" and result["extractor_sha256"] == file_sha256(LENET_MNIST5K)
    assert result["extractor_info"]["test_accuracy"] == 0.97
    assert result["reference"] == {"dataset": "MNISTDataModule", "split": "train", "image_size": 32, "count": 256}
    assert result["floor"]["split"] == "test" and result["floor"]["count"] == 40
    assert all(isinstance(result["floor"][name], float) for name in names[:-2])
    assert "copy_ratio" not in result["floor"]  # the floor is a part of the held-out split itself
    assert result["fd_lenet"] > result["floor"]["fd_lenet"]  # one tiny epoch vs real digits
    from gon_lightning.export import run_records

    assert run_records(trained_run, ckpt)[1] == result  # what `export` puts in the model card
    fake = np.load(trained_run / "fake_features.npy")
    assert fake.shape == (40, 84) and np.load(trained_run / "real_features.npy").shape == (256, 84)
    out = tmp_path / "again"
    main(evaluate_args(mnist_root, runs, f"--ckpt_path={ckpt}", "--num_samples=40", f"--out={out}"))
    again = json.loads((out / "sample_quality.json").read_text())
    assert [again[name] for name in names] == [result[name] for name in names]  # bit for bit


def test_evaluate_scores_a_folder_of_images(mnist_root, tmp_path, digits) -> None:
    images, _ = digits
    folder = tmp_path / "samples"
    (folder / "sub").mkdir(parents=True)
    for i in range(64):  # the real test digits, saved as PNGs (one in a subfolder)
        target = folder / ("sub" if i == 0 else "") / f"{i:03d}.png"
        target.write_bytes(encode_png(torch.from_numpy(images[256 + i][None].copy())).numpy().tobytes())
    (folder / "notes.txt").write_text("not an image")
    runs, out = tmp_path / "runs", tmp_path / "out"
    main(evaluate_args(mnist_root, runs, f"--image_folder={folder}", f"--out={out}"))
    result = json.loads((out / "sample_quality.json").read_text())
    assert result["num_samples"] == 64 and result["sampler"] is None and result["checkpoint"] is None
    assert result["image_folder"] == str(folder.resolve())
    # the same images as the test split, decoded the same way (in another order): the floor's figures, and as far
    # from the training images as the test split (each is its own nearest held-out image)
    assert {n: result[n] for n in result["floor"] if n in result["figures"]} == pytest.approx(
        {n: result["floor"][n] for n in result["figures"] if n in result["floor"]}
    )
    assert result["copy_ratio"] == pytest.approx(1.0, abs=0.2)


def run_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = str(exit_info.value.code) + capsys.readouterr().err
    assert "Traceback" not in message
    return message


def test_evaluate_refuses_bad_input_in_one_line(mnist_root, tmp_path, capsys) -> None:
    runs = tmp_path / "runs"
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png")
    cases = {
        "exactly one of --ckpt_path": [],
        "no such checkpoint file": [f"--ckpt_path={tmp_path / 'missing.ckpt'}"],
        "holds no image files": [f"--image_folder={empty}"],
        f"{broken / 'a.png'} does not decode": [f"--image_folder={broken}"],
        "--sampler picks how a checkpoint's model draws": [f"--image_folder={broken}", "--sampler=gmm"],
    }
    for expected, extra in cases.items():
        assert expected in run_error(evaluate_args(mnist_root, runs, *extra), capsys)
    args = [a for a in evaluate_args(mnist_root, runs, f"--image_folder={broken}") if "extractor" not in a]
    assert "unknown extractor 'vgg'" in run_error([*args, "--extractor=vgg"], capsys)
    assert not runs.exists() or not any(runs.iterdir())  # a failed evaluation leaves no run folder behind


# --- the callback --------------------------------------------------------------------------------------------------


def test_sample_quality_callback_logs_the_figures_within_its_schedule(mnist_root, tmp_path) -> None:
    runs = tmp_path / "runs"
    callback = ["--trainer.callbacks+=SampleQuality", "--trainer.callbacks.every_n_epochs=2"]
    callback += ["--trainer.callbacks.num_samples=32", f"--trainer.callbacks.extractor_weights={LENET_MNIST5K}"]
    main(base_args(mnist_root, runs, "--trainer.max_epochs=2", *callback))
    lines = (only_run(runs) / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    logged = [row for row in rows if row.get("quality/fd_lenet")]
    assert [row["epoch"] for row in logged] == ["1"]  # every 2nd epoch only
    figures = ("precision", "recall", "density", "coverage", "copy_ratio", "copying_z")
    assert {f"quality/{name}" for name in figures} <= set(header)
    assert math.isfinite(float(logged[0]["quality/fd_lenet"]))


QUALITY_WORKER = Path(__file__).with_name("quality_ddp_worker.py")


@pytest.mark.slow
def test_sample_quality_under_ddp_gathers_every_ranks_samples(mnist_root: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo): each draws half of the samples, both score all of them and log the same figures."""
    args = base_args(mnist_root, tmp_path / "runs", "--trainer.devices=2", "--trainer.strategy=ddp")
    args += ["--trainer.callbacks+=SampleQuality", "--trainer.callbacks.every_n_epochs=1"]
    args += ["--trainer.callbacks.num_samples=33", f"--trainer.callbacks.extractor_weights={LENET_MNIST5K}"]
    repo = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, str(QUALITY_WORKER), str(tmp_path), "--", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-12000:]
    assert "sync_dist=True" not in proc.stderr  # no epoch-level value is logged unsynced (Lightning's DDP warning)
    rank0, rank1 = (torch.load(tmp_path / f"quality{rank}.pt") for rank in (0, 1))
    assert rank0["drawn"] == 17 and rank1["drawn"] == 16  # 33 split across the ranks
    assert torch.equal(rank0["fake"], rank1["fake"]) and len(rank0["fake"]) == 33  # all of them, on both
    assert rank0["figures"] == rank1["figures"]


def test_a_model_that_cannot_sample_or_lacks_the_sampler_is_refused_before_any_work(mnist_root, tmp_path) -> None:
    from gon_lightning.callbacks import SampleQuality
    from gon_lightning.evaluation import evaluate
    from gon_lightning.models import GON, ImageModel

    class Reconstructor(ImageModel):  # the generation interface's default: no sample()
        def training_step(self, x, batch_idx):
            raise AssertionError("never reached")

    class Fake:
        datamodule = MNIST5kDataModule(root=tmp_path)

    with pytest.raises(UserError, match="Reconstructor cannot sample"):
        SampleQuality().on_fit_start(Fake(), Reconstructor())
    with pytest.raises(UserError, match=r"^SampleQuality\.sampler: GON has no sampler 'prior'; its samplers: gaussian"):
        SampleQuality(sampler="prior").on_fit_start(Fake(), GON(nz=8, ngf=4))
    # evaluate says so before loading anything (the checkpoint, the extractor, the reference features)
    with pytest.raises(UserError, match=r"^--sampler: GON has no sampler 'prior'"):
        evaluate(None, GON(nz=8, ngf=4), Fake.datamodule, ckpt_path=str(tmp_path / "never-read.ckpt"), sampler="prior")
    with pytest.raises(UserError, match="num_samples"):
        SampleQuality(num_samples=5)


@pytest.mark.slow
def test_held_out_digits_beat_a_trained_models_samples_which_beat_noise(tmp_path, mnist5k, lenet) -> None:
    """The paper GON after 2 epochs on MNIST5k (the quickstart), on the shipped LeNet: its samples are blobs, far
    from the held-out digits (the floor) and yet far nearer to digits than uniform noise is."""
    runs, data = tmp_path / "runs", tmp_path / "data"
    quickstart = ["--config=quickstart", f"--data.root={data}", f"--runs_root={runs}", "--trainer.logger=CSVLogger"]
    main(["fit", *quickstart, "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false"])
    ckpt = only_run(runs) / "checkpoints" / "last.ckpt"
    main(["evaluate", *quickstart, f"--ckpt_path={ckpt}", "--num_samples=1000"])
    result = json.loads((only_run(runs) / "sample_quality.json").read_text())
    samples, held_out = result, result["floor"]
    noise_images = torch.rand(1000, 1, 32, 32, generator=torch.Generator().manual_seed(7)).mul(255).round().div(255)
    noise = score_samples(reference_features(mnist5k, "train", lenet), extract(lenet, noise_images), "lenet")
    assert result["num_samples"] == result["floor"]["count"] == 1000
    assert 20 * held_out["fd_lenet"] < samples["fd_lenet"] and 1.4 * samples["fd_lenet"] < noise["fd_lenet"]
    assert held_out["coverage"] > 0.9 and samples["coverage"] > 10 * noise["coverage"]
    assert held_out["density"] > 0.8 > samples["density"] > noise["density"]
