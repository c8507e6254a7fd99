"""What fitting a lazily fitted sampler costs: encoding the training split, then EM (or the mean and covariance).

    python benchmarks/sampler_fit.py                                  # conv AE and GON, nz 256, MNIST5k
    python benchmarks/sampler_fit.py --models ConvAutoencoder --steps 300 --threads 2

Each model is trained `--steps` steps on MNIST5k (batch 64, Adam 2e-4, as the configs) so its latents have
structure, then `fit_sampler` is timed for `gaussian` (autoencoders: one component, closed form) and `gmm`, with the
number of components chosen by BIC over 1, 2, 5, 10 (the default) and fixed at 10 (Ghosh et al.'s choice). Printed:
seconds for the encoding and for the fit, and the components BIC chose.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from gon_lightning.data import MNIST5kDataModule
from gon_lightning.models import GON, VAE, ConvAutoencoder, VariationalGON
from gon_lightning.models import latent as latent_module

MODELS = {"ConvAutoencoder": ConvAutoencoder, "GON": GON, "VAE": VAE, "VariationalGON": VariationalGON}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["ConvAutoencoder", "GON"], choices=MODELS)
    parser.add_argument("--steps", type=int, default=100, help="training steps before the fit")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default="data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    data = MNIST5kDataModule(root=args.root, batch_size=64)
    data.prepare_data()
    data.setup("fit")
    train = data.splits["train"]
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name]()
        optimiser = torch.optim.Adam(model.parameters(), lr=2e-4)
        model.log = lambda *a, **k: None  # no trainer
        for step in range(args.steps):
            x = train[torch.randint(len(train), (64,))].float() / 255
            loss = model.training_step(x, step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        start = time.perf_counter()
        latents = model.training_latents(train, 64)
        encode_s = time.perf_counter() - start
        print(f"{name}: {len(latents)} latents of {latents.shape[1]} encoded in {encode_s:.1f} s", flush=True)
        for sampler, components in (("gaussian", 1), ("gmm", None), ("gmm", 10)):
            if sampler == "gaussian" and sampler not in model.lazy_samplers:
                continue
            start = time.perf_counter()
            weights, _, _ = latent_module.fit_mixture(latents, components)
            label = "BIC over 1, 2, 5, 10" if components is None else f"{components} component(s)"
            print(f"  {sampler} ({label}): {time.perf_counter() - start:.1f} s, {len(weights)} chosen", flush=True)


if __name__ == "__main__":
    main()
