"""Sample grids of one model per sampler, the learned priors among them: what people look at before the numbers.

    python benchmarks/sample_grids.py --ckpt_path runs/<gon run>/checkpoints/last.ckpt --samplers gaussian gmm \
        --priors runs/<diffusion prior run>/checkpoints/last.ckpt runs/<flow prior run>/checkpoints/last.ckpt \
        --out docs/images --prefix quickstart

writes <out>/<prefix>-<sampler>.png, an 8 x 8 grid of the model's samples drawn by each sampler (the fitted ones on
the model's checkpoint, a learned prior through its own checkpoint, which names the model's), each from the same
seed. The model's run folder (its config.yaml beside checkpoints/) gives the model and the data the fitted
samplers are fitted on.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", type=Path, required=True, help="the model's checkpoint, inside its run folder")
    parser.add_argument("--samplers", nargs="*", default=["gaussian", "gmm"], help="the model's own samplers")
    parser.add_argument("--priors", nargs="*", type=Path, default=[], help="learned priors' checkpoints for it")
    parser.add_argument("--out", type=Path, required=True, help="folder of the PNG files")
    parser.add_argument("--prefix", default="samples", help="file names: <prefix>-<sampler>.png")
    parser.add_argument("--nrow", type=int, default=8, help="grid side (default 8: 64 samples)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from gon_lightning.latents.encoding import load_run
    from gon_lightning.nn.networks import import_object
    from gon_lightning.priors.pair import model_with_prior
    from gon_lightning.runs import load_checkpoint_file

    args.out.mkdir(parents=True, exist_ok=True)
    drawn: list[tuple[str, torch.nn.Module]] = []
    if args.samplers:
        model, data = load_run(args.ckpt_path)
        for sampler in args.samplers:
            model.prepare_sampler(sampler, data)  # a fitted sampler (gmm) is fitted on the training split here
            drawn.append((sampler, model))
    for prior_ckpt in args.priors:
        spec = load_checkpoint_file(prior_ckpt)["hyper_parameters"]
        prior_class = import_object(spec["_class_path"], str(prior_ckpt))
        accepted = {name for cls in prior_class.__mro__ for name in inspect.signature(cls.__init__).parameters}
        prior = prior_class(**{k: v for k, v in spec.items() if k in accepted and k not in ("self", "kwargs")})
        model_of_prior, _, model_ckpt = model_with_prior(prior, prior_ckpt)
        if model_ckpt.resolve() != args.ckpt_path.resolve():
            raise SystemExit(f"sample_grids: {prior_ckpt} was trained on {model_ckpt}, not on {args.ckpt_path}")
        drawn.append((prior.sampler_name, model_of_prior))
    for sampler, model in drawn:
        model.eval()
        torch.manual_seed(args.seed)
        with torch.no_grad():
            images = model.sample(args.nrow * args.nrow, sampler)
        path = args.out / f"{args.prefix}-{sampler}.png"
        grid = make_grid(images.clamp(0, 1), nrow=args.nrow, padding=2, pad_value=1.0)
        pixels = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        grey = images.shape[1] == 1  # make_grid repeats one channel three times: written back as one, a third the size
        Image.fromarray(pixels[..., 0] if grey else pixels).save(path, optimize=True)  # uint8: L or RGB
        print(f"{sampler}: {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
