"""Feature extractors for sample quality: Inception-v3 for numbers comparable with papers, and small classifiers
trained on a dataset's own labels for figures that need no download.

Every extractor is an `nn.Module` taking float images in [0, 1], (B, C, H, W), and returning (B, num_features); it
carries its `name` (which names the figures computed on it), the SHA-256 of the weights file it was loaded from, and
`info` (what it was trained on and its test accuracy, for the classifiers). `load_extractor` builds one by name.

- `inception`: the pool features (2048) of the TF Inception-v3 that FID and KID are defined on, through torchmetrics'
  `NoTrainInceptionV3` (torch-fidelity's port) with TF's own bilinear resize to 299 px (`antialias=False`), grey
  images repeated to three channels and pixels rounded to uint8 as the reference implementations read them.
- `lenet` (LeNet-5, 84 features, for 28-32 px grey images) and `resnet` (a small ResNet, 128 features, for colour):
  trained once, seeded, on the dataset's training split and cached beside its decoded images
  (`<cache>/extractors/<name>.safetensors`); the MNIST5k LeNet ships inside the package, so every user's figure on
  the quickstart data is the same one. Their figures are comparable only with figures on the same weights (the
  SHA-256 says which): never with FID (docs/sample_quality.md).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor, nn

from gon_lightning.errors import UserError
from gon_lightning.metrics.splits import split_images

EXTRACTORS = ("inception", "lenet", "resnet")
CLASSIFIER_SIZE = 32  # px: the classifiers see every image resized to this side
SHIPPED = Path(__file__).parent / "weights"
SHIPPED_WEIGHTS = {("lenet", "MNIST5kDataModule"): SHIPPED / "lenet-mnist5k.safetensors"}
INCEPTION_URL = (  # what torchmetrics' NoTrainInceptionV3 (torch-fidelity) downloads into torch's hub cache
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
TRAIN_STEPS = 3000
TRAIN_BATCH = 64


@contextmanager
def atomic_file(path: Path) -> Iterator[str]:
    """A staging file beside `path` to write, renamed onto `path` when the block ends (a reader finds the whole
    file or none), readable as the umask allows (mkstemp's 0600 would hide it from the node's other users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureExtractor(nn.Module):
    """Base of the extractors: images in [0, 1] (B, C, H, W) -> features (B, num_features), always in eval mode."""

    name: str
    num_features: int

    def __init__(self, sha256: str, info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.sha256 = sha256
        self.info = dict(info or {})

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # BatchNorm statistics and dropout are part of the fixed weights

    def describe(self) -> dict[str, Any]:
        """What a result file says about the extractor."""
        return {"name": self.name, "sha256": self.sha256, "num_features": self.num_features, **self.info}


# --- Inception-v3 ---------------------------------------------------------------------------------------------


def inception_weights_path(weights: str | Path | None = None) -> Path:
    """The Inception-v3 weights file: `weights` when given, else torch's hub cache, downloaded there when missing
    (torchmetrics' own route); a one-line UserError when it cannot be had."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"extractor_weights {path} is not a file: give the Inception-v3 weights file")
        return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_URL.rsplit("/", 1)[1]
    if cached.is_file():
        return cached
    try:
        torch.hub.load_state_dict_from_url(INCEPTION_URL, progress=False, check_hash=True)
    except Exception as error:
        raise UserError(
            f"the Inception-v3 weights are not in {cached.parent} and could not be downloaded "
            f"({type(error).__name__}: {error}); put {INCEPTION_URL} there, give --extractor_weights PATH, "
            "or use an offline extractor (--extractor lenet or resnet)"
        ) from error
    return cached


class InceptionFeatures(FeatureExtractor):
    """Inception-v3 pool features (2048), as torch-fidelity and TF's FID compute them (docs/sample_quality.md)."""

    name = "inception"
    num_features = 2048

    def __init__(self, weights: str | Path | None = None) -> None:
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as error:  # pragma: no cover: torch-fidelity is a dependency
            raise UserError("the inception extractor needs torch-fidelity: pip install torch-fidelity") from error
        path = inception_weights_path(weights)
        super().__init__(file_sha256(path), {"weights": path.name})
        try:
            self.network = NoTrainInceptionV3(
                name="inception-v3-compat",
                features_list=[str(self.num_features)],
                feature_extractor_weights_path=str(path),
                antialias=False,  # TF's bilinear resize, as the reference FID code; torchmetrics' default differs
            )
        except (RuntimeError, KeyError, OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"{path} is not Inception-v3 weights in torch-fidelity's layout ({first})") from error

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grey: the same value in R, G and B
        # pixels as the reference implementations read image files: uint8 (rounded, not truncated)
        return self.network(images.mul(255).round_().clamp_(0, 255).to(torch.uint8))


# --- classifiers trained on the dataset ---------------------------------------------------------------------------


class LeNet(nn.Module):
    """LeNet-5 on 32 x 32 images: two 5x5 convolutions with max pooling, then 120 and 84 units (the features)."""

    num_features = 84

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(84, classes)


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with a shortcut (a 1x1 projection where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )  # fmt: skip
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet on 32 x 32 images: a 3x3 stem, one basic block per stage at 32, 64 and 128 channels (strides
    1, 2, 2), global average pooling: 128 features."""

    num_features = 128

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            BasicBlock(32, 32, 1), BasicBlock(32, 64, 2), BasicBlock(64, 128, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(128, classes)


ARCHITECTURES: dict[str, type[nn.Module]] = {"lenet": LeNet, "resnet": SmallResNet}


def classifier_input(images: Tensor) -> Tensor:
    """Images in [0, 1] as the classifiers see them: CLASSIFIER_SIZE px (antialiased bilinear), in [-1, 1]."""
    if images.shape[-2:] != (CLASSIFIER_SIZE, CLASSIFIER_SIZE):
        images = F.interpolate(images, size=(CLASSIFIER_SIZE,) * 2, mode="bilinear", antialias=True)
    return images.sub(0.5).div(0.5)


class ClassifierFeatures(FeatureExtractor):
    """The penultimate layer of a classifier trained on the dataset (`lenet` or `resnet`)."""

    def __init__(self, name: str, network: nn.Module, sha256: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(sha256, info)
        self.name = name
        self.num_features = network.num_features
        self.network = network
        self.channels = network.features[0].in_channels

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] != self.channels:
            raise UserError(
                f"the {self.name} extractor was trained on {self.channels}-channel images, got {images.shape[1]}"
            )
        return self.network.features(classifier_input(images))


def save_classifier(path: Path, name: str, network: nn.Module, info: dict[str, Any]) -> None:
    """Write a classifier's weights and what it is (safetensors metadata), atomically."""
    from safetensors.torch import save_file

    metadata = {"architecture": name, "channels": str(network.features[0].in_channels)}
    metadata |= {"classes": str(network.head.out_features)} | {k: str(v) for k, v in info.items()}
    with atomic_file(path) as staging:
        save_file({k: v.contiguous() for k, v in network.state_dict().items()}, staging, metadata=metadata)


INFO_TYPES = {"test_accuracy": float, "image_size": int, "train_images": int, "test_images": int, "steps": int}


def load_classifier(path: str | Path, name: str | None = None) -> ClassifierFeatures:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        state = load_file(str(path))
        architecture = metadata.pop("architecture")
        network = ARCHITECTURES[architecture](int(metadata.pop("channels")), int(metadata.pop("classes")))
        network.load_state_dict(state)
    except Exception as error:
        why = f"{type(error).__name__}: {error}"
        raise UserError(f"{path} is not a classifier file gon-lightning wrote ({why})") from error
    if name is not None and architecture != name:
        raise UserError(f"{path} holds a {architecture} classifier, not {name}")
    info = {key: INFO_TYPES.get(key, str)(value) for key, value in metadata.items()}
    return ClassifierFeatures(architecture, network.eval(), file_sha256(path), info)


def train_classifier(
    name: str,
    images: Tensor,
    labels: Tensor,
    test_images: Tensor,
    test_labels: Tensor,
    steps: int = TRAIN_STEPS,
    batch_size: int = TRAIN_BATCH,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[nn.Module, float]:
    """Train `name` (lenet or resnet) on uint8 images (N, C, H, W) and labels with Adam for `steps` batches, seeded;
    returns the network (on the CPU, eval mode) and its accuracy on the test images."""
    classes = int(max(labels.max(), test_labels.max())) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = ARCHITECTURES[name](images.shape[1], classes).to(device)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    network.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        index, order = order[:batch_size], order[batch_size:]
        x = classifier_input(images[index].to(device).float().div_(255))
        loss = F.cross_entropy(network.head(network.features(x)), labels[index].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    network.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test_images), 512):
            x = classifier_input(test_images[start : start + 512].to(device).float().div_(255))
            predicted = network.head(network.features(x)).argmax(1).cpu()
            correct += int((predicted == test_labels[start : start + 512]).sum())
    return network.cpu(), correct / max(1, len(test_images))


def trained_classifier(name: str, datamodule: Any, device: torch.device | str = "cpu") -> ClassifierFeatures:
    """The `name` classifier of `datamodule`'s dataset: shipped (MNIST5k's LeNet), cached beside the decoded images,
    or trained now on the training split (and cached)."""
    shipped = SHIPPED_WEIGHTS.get((name, type(datamodule).__name__))
    if shipped is not None:
        return load_classifier(shipped, name)
    path = Path(datamodule.cache_path) / "extractors" / f"{name}.safetensors"
    if path.is_file():
        return load_classifier(path, name)
    images, labels = split_images(datamodule, "train")
    test_images, test_labels = split_images(datamodule, "test")
    dataset = type(datamodule).__name__
    if bool((labels < 0).any()) or len(torch.unique(labels)) < 2:
        raise UserError(
            f"{dataset} at {datamodule.root} has no class labels to train the {name} extractor on (an unlabelled "
            "folder): use --extractor inception"
        )
    rank_zero_info(f"Training the {name} feature extractor on {dataset}'s {len(images)} training images (once)")
    network, accuracy = train_classifier(name, images, labels, test_images, test_labels, TRAIN_STEPS, device=device)
    info = {
        "trained_on": dataset,
        "image_size": datamodule.image_size,
        "train_images": len(images),
        "test_images": len(test_images),
        "test_accuracy": round(accuracy, 4),
        "steps": TRAIN_STEPS,
    }
    rank_zero_info(f"{name} on {dataset}: test accuracy {accuracy:.4f}; cached in {path}")
    try:
        save_classifier(path, name, network, info)
    except OSError as error:  # the weights' hash is the file's: an extractor that cannot be saved has none
        raise UserError(f"could not write the trained {name} extractor to {path} ({error})") from error
    return load_classifier(path, name)


def load_extractor(
    name: str, datamodule: Any = None, weights: str | Path | None = None, device: torch.device | str = "cpu"
) -> FeatureExtractor:
    """The extractor `name` (one of EXTRACTORS), on `device`, in eval mode, without gradients.

    `weights` is a file to load instead of the default: the Inception-v3 weights (torch-fidelity's layout) or a
    classifier file gon-lightning wrote. Without it the classifiers need `datamodule`: their weights are its
    dataset's (shipped, cached, or trained now on its training split).
    """
    if name not in EXTRACTORS:
        raise UserError(f"unknown extractor {name!r}: choose one of {', '.join(EXTRACTORS)}")
    if name == "inception":
        extractor: FeatureExtractor = InceptionFeatures(weights)
    elif weights is not None:
        extractor = load_classifier(weights, name)
    elif datamodule is None:
        raise UserError(f"the {name} extractor is trained on a dataset: give a DataModule or its weights file")
    else:
        extractor = trained_classifier(name, datamodule, device)
    return extractor.to(device).eval().requires_grad_(False)
