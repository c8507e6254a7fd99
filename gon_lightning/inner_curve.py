"""The inner-step curve: how well a GON-family model reconstructs after 0, 1, 2, 3, 5 and 10 inner steps.

COIN++ (Dupont et al., 2022) reports this curve for its meta-learned network (CIFAR-10, latent 512: 25.5 dB PSNR
at 0 steps, 31.0 after 1, 31.9 after 3, about 32.1 at the plateau): it says whether more steps at encoding time
buy quality the trained number did not, and whether the step size is right. Every point encodes the same images
from the same origin with the model's weights as trained; only the number of steps (and, if given, their size)
changes, under the evaluation protocol of `test` (norm_eval, the batch of the DataModule), so the point at the
trained settings is the model's test/sse and test/psnr.

    from gon_lightning.inner_curve import inner_step_curve, curve_table
    rows = inner_step_curve(model, batches)        # batches: images in [0, 1], as `test` sees them
    print(curve_table(rows))

`benchmarks/inner_steps.py` runs it on a checkpoint's test split.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from gon_lightning.errors import UserError
from gon_lightning.models.base import reconstruction_metrics, update_reconstruction_metrics
from gon_lightning.models.inner_loop import InnerLoopModel

DEFAULT_STEPS = (0, 1, 2, 3, 5, 10)
SEED = 0  # the V-GON draws a posterior sample per reconstruction: every point draws from the same seed


def check_curve_options(model: Any, steps: Sequence[int], step_sizes: Sequence[float | None]) -> None:
    """Refuse, in one line, what the curve cannot do: a model without an inner loop (None: not known yet), steps
    < 0, sizes <= 0."""
    if model is not None and not isinstance(model, InnerLoopModel):
        raise UserError(f"{type(model).__name__} has no inner loop: the inner-step curve is for the GON family")
    if not steps or any(not isinstance(s, int) or s < 0 for s in steps):
        raise UserError(f"--steps must be whole numbers >= 0, got {list(steps)}")
    if not step_sizes or any(size is not None and not size > 0 for size in step_sizes):
        raise UserError(f"--step_sizes must be positive numbers, got {list(step_sizes)}")


@torch.no_grad()
def inner_step_curve(
    model: InnerLoopModel,
    batches: Iterable[Tensor],
    steps: Sequence[int] = DEFAULT_STEPS,
    step_sizes: Sequence[float | None] = (None,),
) -> list[dict[str, Any]]:
    """Mean SSE per image, MSE per pixel and PSNR (of the mean MSE, as `test/psnr`) of the reconstructions of
    `batches` (a re-iterable of image batches in [0, 1] on the model's device) after each number of `steps`, for
    each of `step_sizes` (None: the model's own, fixed or learned). The model is put in eval mode and left so."""
    check_curve_options(model, steps, step_sizes)
    model.eval()
    rows = []
    for size in step_sizes:
        for count in steps:
            metrics = reconstruction_metrics().to(model.device)
            with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
                torch.manual_seed(SEED)
                with model.evaluation_protocol(), model.inner_loop(count, size):
                    for x in batches:
                        update_reconstruction_metrics(metrics, model.reconstruct(x), x)
            rows.append(
                {
                    "steps": count,
                    "step_size": _step_size_name(model, size),
                    **{name: metric.compute().item() for name, metric in metrics.items()},
                }
            )
    return rows


def _step_size_name(model: InnerLoopModel, size: float | None) -> str | float:
    if size is not None:
        return size
    if model.meta_sgd is None:
        return model.fixed_inner_lr
    learned = model.meta_sgd().detach()
    return f"learned (mean {learned.mean().item():.3g}, range {learned.min().item():.3g}-{learned.max().item():.3g})"


def curve_table(rows: list[dict[str, Any]], trained_steps: int | None = None) -> str:
    """The curve as a Markdown table; the row at `trained_steps` (the model's own) is marked."""
    lines = ["| inner steps | step size | SSE per image | PSNR (dB) |", "|---|---|---|---|"]
    for row in rows:
        mark = " (trained)" if row["steps"] == trained_steps else ""
        lines.append(f"| {row['steps']}{mark} | {row['step_size']} | {row['sse']:.3f} | {row['psnr']:.2f} |")
    return "\n".join(lines)
