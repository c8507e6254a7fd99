"""Sample quality of a trained Generative Optimization Network on MNIST-like data, with real and noise baselines.

    python benchmarks/gopt_quality.py CHECKPOINT [--data MNIST5kDataModule] [--root data] [--n 1000] [--out DIR]

Figures, each for the model's samples, for held-out real test images and for uniform noise:
  nn_sse       mean SSE (summed over pixels) from each image to its nearest training image;
  nn_ratio     nn_sse / nn_sse of the held-out real images (what the model logs as val/nn_ratio);
  confidence   mean max-softmax of a small CNN trained here on the training split (frozen, seeded);
  confident    share of images the classifier labels with probability > 0.9;
  class_entropy entropy (nats) of the histogram of predicted classes; ln 10 = 2.303 is every class equally.
Writes OUT/samples.png (a 10 x 10 grid) and OUT/quality.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import save_image

from gon_lightning import data as datamodules
from gon_lightning.models import GenerativeOptimizationNetwork


def classifier(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
    )  # fmt: skip


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int = 4) -> nn.Module:
    torch.manual_seed(0)
    net = classifier(images.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(images)).split(64):
            loss = F.cross_entropy(net(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def figures(x: torch.Tensor, train: torch.Tensor, net: nn.Module) -> dict[str, float]:
    nn_sse = torch.cat([torch.cdist(c.flatten(1), train.flatten(1)).square().min(1).values for c in x.split(256)])
    probs = torch.cat([net(c).softmax(1) for c in x.split(256)])
    hist = torch.bincount(probs.argmax(1), minlength=10).float() / len(x)
    entropy = -(hist[hist > 0] * hist[hist > 0].log()).sum()
    return {
        "nn_sse": nn_sse.mean().item(),
        "confidence": probs.max(1).values.mean().item(),
        "confident": (probs.max(1).values > 0.9).float().mean().item(),
        "class_entropy": entropy.item(),
        "class_histogram": [round(h, 3) for h in hist.tolist()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", default="MNIST5kDataModule")
    parser.add_argument("--root", default="data")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--out", default="gopt_quality")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    dm = getattr(datamodules, args.data)(root=args.root, download=False)
    dm.setup("fit")
    train = dm.splits["train"].float() / 255
    test = dm.splits["test"].float()[: args.n] / 255
    net = train_classifier(train, dm.labels["train"])
    with torch.no_grad():
        accuracy = (net(test).argmax(1) == dm.labels["test"][: args.n]).float().mean().item()

    model = GenerativeOptimizationNetwork.load_from_checkpoint(args.checkpoint, map_location="cpu")
    torch.manual_seed(0)
    samples = torch.cat([model.sample(min(250, args.n - i)) for i in range(0, args.n, 250)])
    noise = torch.rand_like(samples)
    save_image(samples[:100], out / "samples.png", nrow=10, padding=1)

    rows = {"samples": figures(samples, train, net), "real_test": figures(test, train, net)}
    rows["noise"] = figures(noise, train, net)
    for row in rows.values():
        row["nn_ratio"] = row["nn_sse"] / rows["real_test"]["nn_sse"]
    report = {"checkpoint": args.checkpoint, "classifier_test_accuracy": accuracy, "max_entropy": math.log(10), **rows}
    (out / "quality.json").write_text(json.dumps(report, indent=2))
    print(f"classifier test accuracy {accuracy:.3f}; class entropy max {math.log(10):.3f}")
    print(f"{'':10} {'nn_sse':>8} {'nn_ratio':>8} {'conf':>6} {'>0.9':>6} {'entropy':>7}  histogram")
    for name, r in rows.items():
        print(
            f"{name:10} {r['nn_sse']:8.2f} {r['nn_ratio']:8.3f} {r['confidence']:6.3f} {r['confident']:6.3f} "
            f"{r['class_entropy']:7.3f}  {r['class_histogram']}"
        )


if __name__ == "__main__":
    main()
