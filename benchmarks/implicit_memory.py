"""Memory of one implicit-GON training step per image size, measured on the CPU and scaled to a batch.

A training step keeps, until its backward, every activation autograd saved for the origin step's double
backward: about 7 tensors of the layer width per pixel and sine layer. This measures, in a fresh process per
size, (1) the bytes of the tensors autograd saved during one `training_step` (distinct storages; the memory a
GPU must hold at the step's peak, less a few transient gradient tensors) and (2) the growth of the process's
peak resident memory over the step, forward and backward. Both grow linearly with batch x pixels, so a step
measured at `--points` pixel evaluations is scaled to `--batch` images.

    python benchmarks/implicit_memory.py                   # 32, 64, 128 px, paper widths, RGB, scaled to batch 64
    python benchmarks/implicit_memory.py --sizes 28 --channels 1   # the reference's MNIST set-up
    python benchmarks/implicit_memory.py --sizes 64 --fractions 1 0.5 0.25   # pixel subsampling (COIN++'s)

`--fractions` sets `train_pixel_fraction`: a step then evaluates that fraction of each image's pixels (the
measured batch stays the one of the whole image, so the figures compare like for like).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings


def measure(size: int, batch: int, channels: int, fraction: float = 1.0) -> dict[str, float]:
    """One training step of the paper-width implicit GON at `size` px and `batch` images, evaluating `fraction` of
    each image's pixels, in this process."""
    import torch

    from gon_lightning.models import ImplicitGON

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = ImplicitGON(image_shape=(channels, size, size), train_pixel_fraction=fraction)
    optimizer = torch.optim.Adam(model.parameters())
    model.training_step(torch.rand(1, channels, 4, 4), 0).backward()  # warm up: Adam state, code paths (4x4 px)
    optimizer.step()
    optimizer.zero_grad()
    x = torch.rand(batch, channels, size, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model.training_step(x, 0)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"saved_mib": sum(storages.values()) / 2**20, "peak_rss_mib": (peak - before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=64, help="the batch the figures are scaled to")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--points", type=int, default=65536, help="pixel evaluations (batch x pixels) measured")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0], help="train_pixel_fraction values")
    parser.add_argument("--child", type=int, nargs=2, help=argparse.SUPPRESS)  # size, batch: measure in-process
    parser.add_argument("--fraction", type=float, default=1.0, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.channels, args.fraction)))
        return
    batch = args.batch
    print(
        f"| side | pixel fraction | measured batch | saved activations at batch {batch} | "
        f"peak RSS growth at batch {batch} |"
    )
    print("|---|---|---|---|---|")
    for size in args.sizes:
        batch = max(1, args.points // size**2)
        for fraction in args.fractions:
            child = [sys.executable, __file__, "--child", str(size), str(batch), "--channels", str(args.channels)]
            child += ["--fraction", str(fraction)]
            figures = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout)
            scale = args.batch / batch / 1024  # to the requested batch, in GiB
            saved, rss = figures["saved_mib"] * scale, figures["peak_rss_mib"] * scale
            print(f"| {size} | {fraction:g} | {batch} | {saved:.1f} GiB | {rss:.1f} GiB |", flush=True)


if __name__ == "__main__":
    main()
