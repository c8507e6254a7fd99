"""Which normalizing-flow library the `flow` prior uses: zuko and normflows, the same kind of flow on the same latents.

Both fit a masked autoregressive flow (affine, 5 transforms, hidden width 512) by maximum likelihood on a model
checkpoint's standardised training latents, for the same number of Adam steps at the same batch size, or until a
wall-clock budget runs out, side by side in one process; the script prints each one's parameters, steps done and
seconds per step, held-out bits per dimension (on the test split's latents, in the standardised space) and the time
to draw 1,000 samples (`--samples`).

    pip install -e ".[flow-bench]"     # normflows
    python benchmarks/flow_library.py --ckpt runs/<gon run>/checkpoints/last.ckpt --steps 500 --budget-s 300

The choice and the numbers are in docs/priors.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch


def latents_of(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Training and test latents of a checkpoint's model on its run's data, encoded as the samplers encode them."""
    from gon_lightning.latents.encoding import load_run

    model, data = load_run(ckpt)
    data.prepare_data()
    data.setup("fit")
    train = model.training_latents(data.splits["train"], data.batch_size).float()
    data.setup("test")
    test = model.training_latents(data.splits["test"], data.batch_size).float()
    return train, test


def zuko_flow(nz: int, transforms: int, hidden: int):
    import zuko

    flow = zuko.flows.MAF(nz, transforms=transforms, hidden_features=(hidden, hidden))
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))


def normflows_flow(nz: int, transforms: int, hidden: int):
    import normflows as nf

    flows = []
    for _ in range(transforms):
        flows += [nf.flows.MaskedAffineAutoregressive(nz, hidden, num_blocks=2), nf.flows.Permute(nz, mode="swap")]
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(nz, trainable=False), flows)
    return model, model.log_prob, lambda n: model.sample(n)[0]


def measure(name, build, train, test, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    module, log_prob, sample = build(train.shape[1], args.transforms, args.hidden)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    order = torch.randint(0, len(train), (args.steps, args.batch_size), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    done = 0
    for rows in order:
        loss = -log_prob(train[rows]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
        if time.perf_counter() - start > args.budget_s:
            break
    fit_s = time.perf_counter() - start
    with torch.no_grad():
        bpd = (-log_prob(test).mean() / (test.shape[1] * math.log(2))).item()
        start = time.perf_counter()
        sample(args.samples)
        sample_s = time.perf_counter() - start
    params = sum(p.numel() for p in module.parameters())
    return {"library": name, "parameters": params, "steps": done, "step_s": fit_s / done, "test_bpd": bpd,
            "sample_s": sample_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a latent model's checkpoint in its run folder")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--transforms", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--budget-s", type=float, default=600.0, help="each library's fit stops after this long")
    parser.add_argument("--samples", type=int, default=1000, help="latents drawn for the sampling time")
    args = parser.parse_args()
    train, test = latents_of(args.ckpt)
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    train, test = (train - mean) / std, (test - mean) / std
    print(f"latents: train {tuple(train.shape)}, test {tuple(test.shape)}; {args.steps} steps of {args.batch_size}")
    for name, build in (("zuko", zuko_flow), ("normflows", normflows_flow)):
        row = measure(name, build, train, test, args)
        print(
            f"{row['library']:<10} parameters {row['parameters']:>9,}  {row['steps']} steps, {row['step_s']:.3f} s "
            f"each  test bpd (standardised) {row['test_bpd']:7.3f}  {args.samples:,} samples {row['sample_s']:6.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
