"""What a run recorded of a checkpoint (its test metrics, its sample quality), for the model card."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gon_lightning.export.config import read_json
from gon_lightning.latents.store import PROBE_RECORD

TEST_METRICS, SAMPLE_QUALITY = "test_metrics.json", "sample_quality.json"


def run_folder_of(ckpt_path: Path, checkpoint: Mapping[str, Any]) -> Path | None:
    """The run folder a checkpoint belongs to: the one its `checkpoints/` lies in, else the one it records."""
    if ckpt_path.parent.name == "checkpoints":
        return ckpt_path.parent.parent
    recorded = (checkpoint.get("gon_lightning") or {}).get("run_dir")
    return Path(recorded) if recorded and Path(recorded).is_dir() else None


def _describes(record_file: Path, recorded: Any, ckpt_path: Path) -> bool:
    """Whether a record of the run (test metrics, sample quality) was made of this checkpoint as it is now: the
    same file (links followed), not rewritten since (`last.ckpt` moves on when training continues)."""
    if not isinstance(recorded, str) or not Path(recorded).is_file():
        return False
    target = ckpt_path.resolve()
    return Path(recorded).resolve() == target and record_file.stat().st_mtime >= target.stat().st_mtime


def run_records(run_dir: Path | None, ckpt_path: Path) -> tuple[dict[str, float], dict[str, Any], list[str]]:
    """The run's test metrics and sample-quality figures of this checkpoint, and notes on records left out (those
    of another checkpoint of the run, or of this one before it was rewritten: they do not describe this model)."""
    metrics: dict[str, float] = {}
    quality: dict[str, Any] = {}
    notes: list[str] = []
    if run_dir is None:
        return metrics, quality, notes
    test_file, quality_file = run_dir / TEST_METRICS, run_dir / SAMPLE_QUALITY
    if test_file.is_file():
        record = read_json(test_file)
        if _describes(test_file, record.get("checkpoint"), ckpt_path):
            metrics = {key: float(value) for key, value in record.get("metrics", {}).items()}
        else:
            notes.append(f"{test_file} holds the test of another checkpoint, or of an older {ckpt_path.name}")
    if quality_file.is_file():
        record = read_json(quality_file)
        if "checkpoint" in record and not _describes(quality_file, record["checkpoint"], ckpt_path):
            notes.append(f"{quality_file} measured another checkpoint, or an older {ckpt_path.name}")
        else:
            quality = record
    return metrics, quality, notes


def probe_record(run_dir: Path | None, ckpt_path: Path) -> tuple[dict[str, Any], list[str]]:
    """The linear and k-NN probes of this checkpoint's latents that `gon-lightning encode` recorded in its run
    folder ({} when none), and a note when the record is of another checkpoint."""
    path = run_dir / PROBE_RECORD if run_dir is not None else None
    if path is None or not path.is_file():
        return {}, []
    record = read_json(path)
    if not _describes(path, record.get("checkpoint"), ckpt_path):
        return {}, [f"{path} probed the latents of another checkpoint, or of an older {ckpt_path.name}"]
    return record, []
