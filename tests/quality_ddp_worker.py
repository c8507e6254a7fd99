"""Run `gon-lightning fit` with the SampleQuality callback and record, per rank, how many samples the rank drew,
the features scored and the figures. Used by tests/test_sample_quality.py as
`python tests/quality_ddp_worker.py OUT_DIR -- CLI ARGS...` (a script: Lightning's DDP launcher re-runs it per rank).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from gon_lightning.callbacks import quality
from gon_lightning.cli import main

record: dict = {"drawn": 0}


def counting_draw(model, n, *args, **kwargs):
    record["drawn"] += n
    yield from draw(model, n, *args, **kwargs)


def recording_score(reference, fake, *args, **kwargs):
    figures = score(reference, fake, *args, **kwargs)
    record.update(fake=fake.clone(), figures=figures)
    torch.save(record, Path(sys.argv[1]) / f"quality{dist.get_rank()}.pt")
    return figures


draw, score = quality.draw_samples, quality.score_samples
quality.draw_samples, quality.score_samples = counting_draw, recording_score

if __name__ == "__main__":
    main(sys.argv[sys.argv.index("--") + 1 :])
