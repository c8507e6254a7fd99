"""The published training loops, transcribed in plain PyTorch: an independent check of gon-lightning.

GON, detached GON, variational GON, convolutional autoencoder and VAE as the reference scripts of
Bond-Taylor & Willcocks (ICLR 2021, cwkx/GON) train and evaluate them: their own `nn.Sequential` networks
(named as the references named them: `main`, `fc21`, `fc22`), their loops and losses written out, Adam at
lr 2e-4, batch 64 with `drop_last`, images from PIL through `Resize(32)` and `ToTensor()`, and evaluation with
the model left in train mode (BatchNorm normalises with each test batch's statistics, the variational models
sample) at batch 64. Nothing here imports gon_lightning: `tests/test_equivalence.py` loads our initial
weights into these networks by name (`load_ours`) and checks, step by step, that our LightningModules compute
the same thing; `benchmarks/reproduce.py` runs this loop beside ours on real data.

    python benchmarks/published_loop.py --model gon --epochs 5 --seed 0 --data-root ~/datasets --out gon.json

The JSON holds, after every epoch, the test SSE per image (and the negative ELBO, nats per image, for V-GON and
VAE) and the training seconds so far (evaluation excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

MODELS = ("gon", "gon_detached", "vgon", "ae", "vae")
nc, img_size, nz, ngf, lr, batch_size = 1, 32, 256, 16, 2e-4, 64  # the references' settings


# --- the networks, as the references wrote them -----------------------------------------------------------


class Generator(nn.Module):
    """The GON's decoder; with `variational`, V-GON's F: fc21/fc22 to mu and logvar, reparameterise, decode."""

    def __init__(self, variational: bool = False):
        super().__init__()
        self.variational = variational
        if variational:
            self.fc21 = nn.Linear(nz, nz)
            self.fc22 = nn.Linear(nz, nz)
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=True),
            nn.BatchNorm2d(ngf * 4),
            nn.ELU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=True),
            nn.BatchNorm2d(ngf * 2),
            nn.ELU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=True),
            nn.BatchNorm2d(ngf),
            nn.ELU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=True),
            nn.Sigmoid(),
        )

    def reparameterize(self, mu, logvar):
        if self.training:
            std = logvar.mul(0.5).exp_()
            eps = std.data.new(std.size()).normal_()
            return eps.mul(std).add_(mu)
        return mu

    def forward(self, input):
        if not self.variational:
            return self.main(input)
        mu = self.fc21(input)
        logvar = self.fc22(input)
        z = self.reparameterize(mu, logvar)
        return self.main(z.unsqueeze(-1).unsqueeze(-1)), mu, logvar


class Encoder(nn.Module):
    """The decoder mirrored (the autoencoder baselines): images to nz features."""

    def __init__(self):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ngf, 4, 2, 1, bias=True),
            nn.BatchNorm2d(ngf),
            nn.ELU(True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=True),
            nn.BatchNorm2d(ngf * 2),
            nn.ELU(True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=True),
            nn.BatchNorm2d(ngf * 4),
            nn.ELU(True),
            nn.Conv2d(ngf * 4, nz, 4, 1, 0, bias=True),
        )

    def forward(self, input):
        return self.main(input).view(-1, nz)


class Autoencoder(nn.Module):
    """Encoder and decoder; with `variational` (the VAE), fc21/fc22 map the encoder's features to mu and logvar.

    Built in the order of our ConvAutoencoder/VAE (encoder, decoder, then fc21/fc22), so that one seed initialises
    both alike and a run of each with the same seed can be compared as a pair."""

    def __init__(self, variational: bool = False):
        super().__init__()
        self.variational = variational
        self.encoder = Encoder()
        self.decoder = Generator()
        if variational:
            self.fc21 = nn.Linear(nz, nz)
            self.fc22 = nn.Linear(nz, nz)

    def reparameterize(self, mu, logvar):
        if self.training:
            std = logvar.mul(0.5).exp_()
            eps = std.data.new(std.size()).normal_()
            return eps.mul(std).add_(mu)
        return mu

    def forward(self, x):
        if not self.variational:
            return self.decoder(self.encoder(x).view(-1, nz, 1, 1))
        h = self.encoder(x)
        mu, logvar = self.fc21(h), self.fc22(h)
        z = self.reparameterize(mu, logvar)
        return self.decoder(z.view(-1, nz, 1, 1)), mu, logvar


def make_network(model: str) -> nn.Module:
    if model in ("gon", "gon_detached"):
        return Generator()
    if model == "vgon":
        return Generator(variational=True)
    if model in ("ae", "vae"):
        return Autoencoder(variational=model == "vae")
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")


# gon-lightning's parameter names -> the references'. The only coupling to our code: weights by name.
NAME_MAP = {
    "gon": {"decoder.net.": "main."},
    "gon_detached": {"decoder.net.": "main."},
    "vgon": {"decoder.net.": "main.", "to_mu.": "fc21.", "to_logvar.": "fc22."},
    "ae": {"encoder.net.": "encoder.main.", "decoder.net.": "decoder.main."},
    "vae": {"encoder.net.": "encoder.main.", "decoder.net.": "decoder.main.", "to_mu.": "fc21.", "to_logvar.": "fc22."},
}  # fmt: skip


def reference_name(model: str, ours: str) -> str:
    for prefix, theirs in NAME_MAP[model].items():
        if ours.startswith(prefix):
            return theirs + ours[len(prefix) :]
    raise KeyError(f"{ours}: no reference name for it in NAME_MAP[{model!r}]")


# our buffers with no counterpart: the Gaussian fitted to training latents for sampling (no part of training)
OURS_ONLY = ("latent_",)


def load_ours(network: nn.Module, model: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load gon-lightning weights and BatchNorm buffers into a reference network (strictly: every name maps)."""
    mapped = {reference_name(model, k): v for k, v in state.items() if not k.startswith(OURS_ONLY)}
    network.load_state_dict(mapped, strict=True)
    return network


# --- the losses --------------------------------------------------------------------------------------------


def gon_loss(g, x):
    return ((g - x) ** 2).sum(1).mean()


def vae_loss(p, x, mu, logvar, weight=1.0):
    BCE = F.binary_cross_entropy(p.view(-1, 32 * 32 * nc), x.view(-1, 32 * 32 * nc), reduction="none").sum(1).mean()
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1).mean()
    return BCE + (KLD * weight), BCE, KLD


def sse(g, x):
    """Summed squared error per image (over C x H x W): the published reconstruction figure."""
    return ((g - x) ** 2).view(x.size(0), -1).sum(1)


# --- one training step and one evaluation batch, per model -------------------------------------------------


def origin_latent(F, x, variational, create_graph):
    shape = (x.size(0), nz) if variational else (x.size(0), nz, 1, 1)
    z = torch.zeros(*shape, dtype=x.dtype, device=x.device).requires_grad_()
    if variational:
        g, mu, logvar = F(z)
        inner_loss = vae_loss(g, x, mu, logvar)[0]
    else:
        g = F(z)
        inner_loss = gon_loss(g, x)
    grad = torch.autograd.grad(inner_loss, [z], create_graph=create_graph, retain_graph=True)[0]
    return -grad


def train_step(model: str, net: nn.Module, optim: torch.optim.Optimizer, x: torch.Tensor) -> float:
    if model in ("gon", "gon_detached"):
        z = origin_latent(net, x, False, create_graph=True)
        if model == "gon_detached":
            z = z.detach()
        g = net(z)
        loss = gon_loss(g, x)
    elif model == "vgon":
        z = origin_latent(net, x, True, create_graph=True)
        g, mu, logvar = net(z)
        loss = vae_loss(g, x, mu, logvar)[0]
    elif model == "ae":
        loss = gon_loss(net(x), x)
    else:
        g, mu, logvar = net(x)
        loss = vae_loss(g, x, mu, logvar)[0]
    optim.zero_grad()
    loss.backward()
    optim.step()
    return loss.detach()


def evaluate_batch(model: str, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SSE per image and (variational models) negative ELBO per image, the network left in train mode."""
    if model in ("gon", "gon_detached", "vgon"):
        variational = model == "vgon"
        z = origin_latent(net, x, variational, create_graph=False).detach()
        with torch.no_grad():
            if not variational:
                return sse(net(z), x), None
            g, mu, logvar = net(z)
    else:
        with torch.no_grad():
            if model == "ae":
                return sse(net(x), x), None
            g, mu, logvar = net(x)
    bce = F.binary_cross_entropy(g.view(x.size(0), -1), x.view(x.size(0), -1), reduction="none").sum(1)
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    return sse(g, x), bce + kld


def evaluate(model: str, net: nn.Module, batches: Iterable) -> dict[str, float]:
    total_sse, total_elbo, n = 0.0, 0.0, 0
    for x, _ in batches:
        errors, nelbo = evaluate_batch(model, net, x)
        total_sse += errors.sum().item()
        total_elbo += nelbo.sum().item() if nelbo is not None else 0.0
        n += x.size(0)
    out = {"test_sse": total_sse / n}
    if model in ("vgon", "vae"):
        out["test_elbo"] = total_elbo / n
    return out


# --- the reference run --------------------------------------------------------------------------------------


def loaders(root: Path) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    transform = torchvision.transforms.Compose(
        [torchvision.transforms.Resize(img_size), torchvision.transforms.ToTensor()]
    )
    train = torchvision.datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test = torchvision.datasets.MNIST(str(root), train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train, sampler=None, shuffle=True, batch_size=batch_size, drop_last=True)
    test_loader = torch.utils.data.DataLoader(test, shuffle=False, batch_size=batch_size)
    return train_loader, test_loader


def run(model: str, epochs: int, seed: int, root: Path, out: Path | None = None) -> dict:
    torch.manual_seed(seed)
    train_loader, test_loader = loaders(root)
    net = make_network(model)
    optim = torch.optim.Adam(lr=lr, params=net.parameters())
    result = {
        "model": model,
        "seed": seed,
        "parameters": sum(p.numel() for p in net.parameters()),
        "steps_per_epoch": len(train_loader),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "epochs": {},
    }
    trained = 0.0
    for epoch in range(1, epochs + 1):
        began = time.perf_counter()
        for x, _ in train_loader:
            train_step(model, net, optim, x)
        trained += time.perf_counter() - began
        began = time.perf_counter()
        metrics = evaluate(model, net, test_loader)
        result["epochs"][epoch] = {**metrics, "train_s": trained, "eval_s": time.perf_counter() - began}
        print(f"{model} seed {seed} epoch {epoch}: {metrics} ({trained:.0f} s training)", flush=True)
        if out is not None:  # after every epoch, so an interrupted run keeps what it reached
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", type=Path, default=Path("data"), help="holds MNIST/raw/ (torchvision layout)")
    parser.add_argument("--out", type=Path, help="JSON written after every epoch")
    args = parser.parse_args(argv)
    if not (args.data_root / "MNIST" / "raw").is_dir():
        parser.error(f"--data-root {args.data_root}: no MNIST/raw/ there (torchvision's layout)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    run(args.model, args.epochs, args.seed, args.data_root, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
