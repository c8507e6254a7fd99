"""Training-step time of the autoencoder and VAE with and without the CompileModules callback, side by side.

    python benchmarks/compile_speed.py [--models ConvAutoencoder VAE] [--batch 64] [--steps 20] [--rounds 5]

Each model is built twice from the same weights; one copy is compiled through `CompileModules` (the same code
path as `--trainer.callbacks+=CompileModules`). After warm-up (which includes compilation, timed separately),
eager and compiled blocks of `steps` optimiser steps alternate `rounds` times, so load from other processes
hits both alike; the median seconds per step and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gon_lightning.callbacks import CompileModules
from gon_lightning.models import VAE, ConvAutoencoder
from gon_lightning.models.gon import paper_loss


def step_fn(model):
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)

    def step(x: torch.Tensor) -> None:
        if isinstance(model, VAE):
            loss = model.loss(x)[0].mean()
        else:
            loss = paper_loss(model.decoder(model.encoder(x)), x).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def block(step, x: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(x)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ConvAutoencoder", "VAE"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    classes = {"ConvAutoencoder": ConvAutoencoder, "VAE": VAE}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, nz 256, ngf 16")
    x = torch.rand(args.batch, 1, 32, 32)
    for name in args.models:
        torch.manual_seed(0)
        eager = classes[name]().train()
        compiled = classes[name]().train()
        compiled.load_state_dict(eager.state_dict())
        CompileModules().setup(None, compiled, "fit")
        eager_step, compiled_step = step_fn(eager), step_fn(compiled)
        start = time.perf_counter()
        compiled_step(x)
        compiled_step(x)
        warmup = time.perf_counter() - start
        block(eager_step, x, 2)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.rounds):
            times["eager"].append(block(eager_step, x, args.steps))
            times["compiled"].append(block(compiled_step, x, args.steps))
        e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
        print(
            f"{name:16} eager {1000 * e:7.1f} ms/step  compiled {1000 * c:7.1f} ms/step  "
            f"speed-up x{e / c:.2f}  (compile warm-up {warmup:.0f} s)"
        )


if __name__ == "__main__":
    main()
