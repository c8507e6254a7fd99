"""Opt-in torch.compile for the models that allow it, as a Lightning callback.

Add it to a run with `--trainer.callbacks+=CompileModules` (or under `trainer.callbacks` in a config). The
model names what may be compiled (`ImageModel.compile_targets`); each of those submodules is compiled in
place (`nn.Module.compile`), so parameter names, checkpoints and resuming are the same as without it.
Models that train through a double backward (the GON family, unless detached) refuse with a `UserError`
rather than being silently left uncompiled (docs/design.md, "Compile limits").
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info

from gon_lightning.errors import UserError


class CompileModules(Callback):
    """Compile the model's `compile_targets()` with torch.compile before the first step.

    Args:
        backend: torch.compile backend.
        mode: torch.compile mode ("default", "reduce-overhead", "max-autotune", ...); None is the default.
        dynamic: torch.compile's dynamic-shape setting; None lets it decide after a recompilation.
        fullgraph: fail on graph breaks instead of splitting the graph.
    """

    def __init__(
        self, backend: str = "inductor", mode: str | None = None, dynamic: bool | None = None, fullgraph: bool = False
    ) -> None:
        self.options: dict[str, Any] = {"backend": backend, "mode": mode, "dynamic": dynamic, "fullgraph": fullgraph}
        self.compiled: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.compiled:
            return  # fit then test in one process: compiled already
        targets = getattr(pl_module, "compile_targets", None)
        if targets is None:
            raise UserError(f"CompileModules works with gon-lightning models; {type(pl_module).__name__} is not one")
        names = targets()
        if not names:
            raise UserError(f"{type(pl_module).__name__} has nothing to compile: remove CompileModules")
        for name in names:
            getattr(pl_module, name).compile(**self.options)
        self.compiled = names
        rank_zero_info(f"torch.compile ({self.options['backend']}): {', '.join(names)}")
