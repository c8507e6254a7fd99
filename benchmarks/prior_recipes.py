"""Which recipe the default flow-matching prior uses: variants trained side by side on one checkpoint's latents.

Each variant trains FlowMatchingPrior's loss (the library's, on per-dimension standardised latents, AdamW) in a plain
loop on the training latents of a model checkpoint (its run's `latents/` cache, as `fit --config prior` reads them),
then draws 1,000 samples through the model's decoder and scores them as `gon-lightning evaluate` does (the same
extractor, reference split, seed and batch of 64): fd_lenet, precision, recall, coverage, copy_ratio. It prints one
JSON line per evaluation.

    python benchmarks/prior_recipes.py --ckpt runs/<gon run>/checkpoints/last.ckpt --network residual
    python benchmarks/prior_recipes.py --ckpt ... --network mlp --hidden 1024 --depth 3 --eval-at 2000 4000

`--decodings` trains nothing: it scores the model's own decodings of its test latents (the floor of a prior that
generalises) and of training latents (literal copies), the control for the copying figures; with `--smoothed 0.3
0.5 ...` also of training latents blurred by Gaussian noise of that std (standardised, the variance kept: a kernel
density estimate, the simplest density that generalises by blurring), with their latent copying figures, the
frontier a learned prior is placed on.

`--network mlp` is the plain MLP [x, t] -> hidden x depth -> nz (the prior's first default), kept here only to
compare; `--schedule constant` keeps the learning rate after the warm-up; `--ema` scores an exponential moving
average of the weights too. docs/priors.md has the results.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from gon_lightning.data.latents import LatentDataModule
from gon_lightning.evaluation import draw_samples, quantised
from gon_lightning.latents.encoding import load_run
from gon_lightning.metrics import extract, load_extractor, reference_features, score_samples
from gon_lightning.metrics.copying import latent_copying_figures
from gon_lightning.priors import FlowMatchingPrior
from gon_lightning.priors.base import STD_FLOOR, cosine_warmup
from gon_lightning.priors.flow_matching import time_embedding

FIGURES = ("fd_lenet", "precision", "recall", "coverage", "copy_ratio", "copying_z")


class PlainVelocity(nn.Module):
    """v(x, t): a plain MLP [nz + time_dim -> hidden x depth -> nz] with SiLU."""

    def __init__(self, nz: int, hidden: int, depth: int, time_dim: int) -> None:
        super().__init__()
        self.time_dim = time_dim
        widths = [nz + time_dim, *[hidden] * depth]
        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise(widths):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], nz))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, time_embedding(t.to(x.dtype), self.time_dim)], dim=1))


def scorer(ckpt: Path, samples: int):
    """(score(prior), score_decoded(latents)) -> figures, scored as evaluate does: the checkpoint's model decodes
    `samples` draws of the prior, or the given latents themselves."""
    model, data = load_run(ckpt)
    model.eval()
    data.prepare_data()
    data.setup("fit")
    features = load_extractor(data.extractor, data)
    real, held_out = reference_features(data, "train", features), reference_features(data, "test", features)

    def figures(fake: Tensor) -> dict[str, float]:
        scores = score_samples(real, fake, features.name, held_out=held_out)
        return {name: round(scores[name], 3) for name in FIGURES}

    def score(prior: FlowMatchingPrior) -> dict[str, float]:
        model.attach_prior(prior.eval())
        fake = torch.cat([extract(features, quantised(x)) for x in draw_samples(model, samples, 64, None, 0)])
        model.detach_prior(prior.sampler_name)
        return figures(fake)

    def score_decoded(latents: Tensor) -> dict[str, float]:
        with torch.no_grad(), model.evaluation_protocol():
            decoded = [extract(features, quantised(model.decode_latents(z))) for z in latents.split(64)]
        return figures(torch.cat(decoded))

    return score, score_decoded


def latent_copying(prior: FlowMatchingPrior, train: Tensor, test: Tensor, samples: int = 1000) -> dict[str, float]:
    """evaluate's copying figures in the prior's latent space (its samples against the training and test latents),
    and its loss on the test latents (fixed noise)."""
    prior.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        drawn = prior.sample(samples)
        held_out = prior.loss(prior.standardise(test)).item()
    found = latent_copying_figures(train, drawn, test)
    return {name: round(value, 3) for name, value in found.items()} | {"test_loss": round(held_out, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", type=Path, required=True, help="a latent model's checkpoint in its run folder")
    parser.add_argument("--network", choices=("residual", "mlp"), default="residual")
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--dropout", type=float, default=0.1, help="FlowMatchingPrior's (configs/prior.yaml's 0.1)")
    parser.add_argument("--solver", choices=("euler", "heun"), default="heun", help="sampling (configs/prior.yaml's)")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument("--ema", type=float, default=0.0, help="also score an EMA of the weights with this decay")
    parser.add_argument("--eval-at", type=int, nargs="*", default=[], help="steps to score at besides the last")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decodings",
        action="store_true",
        help="train nothing: score the model's own decodings of its test latents and of --samples training latents "
        "(what a prior that generalised, or one that copied, would reach)",
    )
    parser.add_argument(
        "--smoothed",
        type=float,
        nargs="*",
        default=[],
        help="with --decodings: also decode training latents plus Gaussian noise of each of these stds (standardised)",
    )
    args = parser.parse_args()

    data = LatentDataModule(ckpt_path=str(args.ckpt))
    latents = data.latents("train")
    score, score_decoded = scorer(args.ckpt, args.samples)
    if args.decodings:
        drawn = torch.randperm(len(latents), generator=torch.Generator().manual_seed(args.seed))[: args.samples]
        for split, chosen in (("test", data.latents("test")), ("train", latents[drawn])):
            print(json.dumps({"decoded": split, "latents": len(chosen)} | score_decoded(chosen)), flush=True)
        mean, std = latents.mean(0), latents.std(0).clamp_min(STD_FLOOR)  # as the priors standardise
        for sigma in args.smoothed:  # the same noise for every std: one path along the frontier
            noise = torch.randn(len(drawn), latents.shape[1], generator=torch.Generator().manual_seed(args.seed))
            standardised = ((latents[drawn] - mean) / std + sigma * noise) / (1 + sigma**2) ** 0.5
            blurred = standardised * std + mean
            copying = latent_copying_figures(latents, blurred, data.latents("test"))
            row = {"decoded": "train + noise", "std": sigma} | score_decoded(blurred)
            print(json.dumps(row | {name: round(value, 3) for name, value in copying.items()}), flush=True)
        return
    torch.manual_seed(args.seed)
    prior = FlowMatchingPrior(
        latent_size=latents.shape[1],
        hidden=args.hidden,
        depth=args.depth,
        lr=args.lr,
        dropout=args.dropout,
        solver=args.solver,
    )
    if args.network == "mlp":
        prior.velocity = PlainVelocity(latents.shape[1], args.hidden, args.depth, 64)
    prior.set_statistics(latents)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    warmup = min(prior.warmup_steps, args.steps // 10)
    factor = (lambda s: cosine_warmup(s, args.steps, warmup)) if args.schedule == "cosine" else None
    factor = factor or (lambda s: min(1.0, (s + 1) / max(1, warmup)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    average = copy.deepcopy(prior) if args.ema else None
    print(json.dumps(vars(args), default=str), flush=True)
    order = torch.Generator().manual_seed(args.seed)
    start, step, losses = time.perf_counter(), 0, []
    while step < args.steps:
        permutation = torch.randperm(len(latents), generator=order)
        for first in range(0, len(latents) - args.batch_size + 1, args.batch_size):
            loss = prior.loss(prior.standardise(latents[permutation[first : first + args.batch_size]]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            if average is not None:
                with torch.no_grad():
                    for kept, current in zip(average.parameters(), prior.parameters(), strict=True):
                        kept.lerp_(current, 1 - args.ema)
            if step in args.eval_at or step == args.steps:
                recent = losses[-100:]
                row = {"step": step, "train_s": round(time.perf_counter() - start), "loss": sum(recent) / len(recent)}
                row |= score(prior) | latent_copying(prior, latents, data.latents("test"))
                if average is not None:
                    row["ema"] = score(average)
                print(json.dumps(row), flush=True)
                prior.train()
            if step == args.steps:
                break


if __name__ == "__main__":
    main()
