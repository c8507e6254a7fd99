"""Callbacks and plugins of the gon-lightning CLI: image panels, sample quality, predict outputs, checkpoint safety,
progress, the run's config and test metrics files."""

from gon_lightning.callbacks.checkpointing import AtomicCheckpointIO, BestAndLastCheckpoint, RunState
from gon_lightning.callbacks.compile import CompileModules
from gon_lightning.callbacks.divergence import DivergenceError, DivergenceGuard
from gon_lightning.callbacks.images import ImagePanels, PredictionWriter, make_panels
from gon_lightning.callbacks.performance import ChannelsLast
from gon_lightning.callbacks.probe import OnlineLinearProbe
from gon_lightning.callbacks.progress import EpochLog, TrainingClock
from gon_lightning.callbacks.quality import SampleQuality
from gon_lightning.callbacks.run_files import HoldBackLoggers, RunConfigCallback, SaveTestMetrics, WandbRunSummary
from gon_lightning.callbacks.summary import CompactModelSummary
from gon_lightning.callbacks.worst import WorstReconstructions

__all__ = [
    "AtomicCheckpointIO",
    "BestAndLastCheckpoint",
    "ChannelsLast",
    "CompactModelSummary",
    "CompileModules",
    "DivergenceError",
    "DivergenceGuard",
    "EpochLog",
    "HoldBackLoggers",
    "ImagePanels",
    "OnlineLinearProbe",
    "PredictionWriter",
    "RunConfigCallback",
    "RunState",
    "SampleQuality",
    "SaveTestMetrics",
    "TrainingClock",
    "WandbRunSummary",
    "WorstReconstructions",
    "make_panels",
]
