"""What each sample-quality figure says about image sets whose truth is known, on MNIST5k and the shipped LeNet.

    python benchmarks/figure_sanity.py --root /tmp/gon-figures        # about a minute on 2 quiet cores

Every set is scored as `gon-lightning evaluate` scores samples (`score_samples`: against the training split, the
k-NN figures against a seeded subset as large as the set), with the copying figures against held-out digits:

    held-out digits   500 test digits (fresh draws of the data); the other 500 are the copying figures' held-out set
    training digits   --n training digits handed back verbatim (a generator that copies)
    near copies       the same with Gaussian pixel noise of sd 0.05 (a prior that memorised the latents)
    uniform noise     --n images of uniform noise at 28 px, decoded as `evaluate --image_folder` decodes a folder of
                      such PNGs (antialiased resize to MNIST5k's 32 px)

Every row's copying figures compare it with the same 500 held-out test digits.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torchvision.transforms.v2.functional import resize

from gon_lightning.data import MNIST5kDataModule
from gon_lightning.metrics import (
    COPYING_FIGURES,
    CopyingTest,
    extract,
    load_extractor,
    reference_features,
    score_samples,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="where MNIST5k's decoded cache goes")
    parser.add_argument("--n", type=int, default=1000, help="images per set (the held-out digits: half the test split)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = MNIST5kDataModule(root=args.root)
    data.setup("fit")
    lenet = load_extractor("lenet", data)
    train = reference_features(data, "train", lenet)
    test_images = data.splits["test"]
    order = torch.randperm(len(test_images), generator=torch.Generator().manual_seed(0))
    half = len(test_images) // 2
    held_out_rows, fresh_rows = order[:half].sort().values, order[half:].sort().values
    held_out = extract(lenet, test_images[held_out_rows])
    copying = CopyingTest(train, held_out)
    g = torch.Generator().manual_seed(1)
    train_images = data.splits["train"][: args.n].float() / 255
    sets = {
        "held-out digits": test_images[fresh_rows].float() / 255,
        "training digits": train_images,
        "near copies": (train_images + 0.05 * torch.randn(train_images.shape, generator=g)).clamp(0, 1),
        "uniform noise": resize(
            torch.rand(args.n, 1, 28, 28, generator=g).mul(255).round().to(torch.uint8), [32, 32], antialias=True
        ).float()
        / 255,
    }
    rows = {}
    for name, images in sets.items():
        images = images.mul(255).round().div(255)  # 8 bits, as evaluate scores samples
        rows[name] = score_samples(train, extract(lenet, images), "lenet", held_out=copying)
    names = [n for n in next(iter(rows.values())) if not n.startswith(("kd_std",))]
    sizes = ", ".join(f"{name} {len(images)}" for name, images in sets.items())
    print(f"MNIST5k, shipped LeNet, against {len(train)} training digits ({sizes} images); copying figures")
    print(f"against {len(held_out)} held-out test digits ({copying.cells} cells)\n")
    print("| set | " + " | ".join(f"`{n}`" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, figures in rows.items():
        print(f"| {name} | " + " | ".join(f"{figures[n]:.4g}" for n in names) + " |")
    assert set(COPYING_FIGURES) <= set(names)


if __name__ == "__main__":
    main()
