"""Does a learned prior copy its training latents? Its samples' nearest-training-latent distance against the test
images' latents', in the prior's own (standardised) latent space.

    python benchmarks/latent_copying.py runs/<prior run>/checkpoints/last.ckpt [more priors] --num-samples 1000

For each prior checkpoint: the model checkpoint it names is encoded as LatentDataModule encodes it (the cache in the
model's run folder, reused), `num_samples` latents are drawn from the prior (seed 0), and the median Euclidean
distance of each sample to its nearest training latent is divided by the same median for the test split's latents
(each dimension standardised by the training latents' mean and std, the space the prior is trained in).
`latent_copy_ratio` below 1: the samples lie closer to the training latents than held-out images' latents do (a
prior that memorised its training set gives about 0); about 1 or above: no copying. `evaluate`'s `copy_ratio` is
the same figure on the classifier's features of the decoded samples.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

import torch


def median_nearest(queries: torch.Tensor, reference: torch.Tensor, block: int = 512) -> float:
    nearest = torch.cat(
        [torch.cdist(queries[i : i + block], reference).min(1).values for i in range(0, len(queries), block)]
    )
    return float(nearest.median())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("priors", nargs="+", type=Path, help="learned priors' checkpoints")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    from gon_lightning.data import LatentDataModule
    from gon_lightning.nn.networks import import_object
    from gon_lightning.priors.pair import checked_source, load_prior
    from gon_lightning.runs import load_checkpoint_file

    results = []
    for prior_ckpt in args.priors:
        spec = load_checkpoint_file(prior_ckpt)["hyper_parameters"]
        prior_class = import_object(spec["_class_path"], str(prior_ckpt))
        accepted = {name for cls in prior_class.__mro__ for name in inspect.signature(cls.__init__).parameters}
        prior = prior_class(**{k: v for k, v in spec.items() if k in accepted and k not in ("self", "kwargs")})
        model_ckpt = checked_source(load_prior(prior, prior_ckpt), prior_ckpt)
        data = LatentDataModule(ckpt_path=str(model_ckpt))
        data.prepare_data()
        data.setup("fit")
        train, test = data.latents("train"), data.latents("test")
        prior.eval()
        torch.manual_seed(args.seed)
        samples = prior.sample(args.num_samples).float()
        mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
        train_s, test_s, samples_s = ((z - mean) / std for z in (train, test, samples))
        held_out = median_nearest(test_s, train_s)
        drawn = median_nearest(samples_s, train_s)
        result = {
            "prior": str(prior_ckpt),
            "sampler": prior.sampler_name,
            "model_checkpoint": str(model_ckpt),
            "num_samples": args.num_samples,
            "test_latents": len(test),
            "train_latents": len(train),
            "median_nearest_samples": drawn,
            "median_nearest_test": held_out,
            "latent_copy_ratio": drawn / held_out,
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
