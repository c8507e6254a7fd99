"""The inner loop's options, shared by every GON-family model: how many gradient steps the origin step takes, and
their size (fixed, or learned per latent dimension with Meta-SGD).

`OriginModel` reads `inner_steps` and `inner_lr` as hooks; this base declares them as options. The defaults are the
paper's single step z = z0 - grad, and add nothing to the model (no parameter, no random draw): a model built with
them computes what it did before these options existed, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from torch import Tensor

from gon_lightning.errors import MODEL, UserError, positive, positive_int, require
from gon_lightning.models.origin import OriginModel
from gon_lightning.nn.meta_sgd import MetaSGD

LEARNED = "learned"


class InnerLoopModel(OriginModel):
    """Base of the GON-family models with a configurable inner loop (abstract).

    Args:
        inner_steps: gradient steps on the inner loss (1 is the paper's single step from the origin).
        inner_lr: size of each inner step: a number (1 is the paper's z = z0 - grad), or "learned": one step size
            per latent dimension, learned with the model through the outer loss (Meta-SGD, as functa encodes),
            kept non-negative.
        inner_lr_init: the learned step sizes' initial value (with inner_lr "learned" only): a number for every
            dimension (default 1, the fixed step they replace), or [low, high] to draw them uniformly (functa's
            [0.005, 0.1]).
    """

    def __init__(
        self,
        inner_steps: int = 1,
        inner_lr: float | Literal["learned"] = 1.0,
        inner_lr_init: float | tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        positive_int(MODEL + "inner_steps", inner_steps)
        learned = inner_lr == LEARNED
        if not learned:
            require(
                isinstance(inner_lr, (int, float)) and inner_lr > 0, MODEL + "inner_lr", inner_lr,
                f"a positive number or {LEARNED!r}",
            )  # fmt: skip
            if inner_lr_init is not None:
                raise UserError(
                    f"{MODEL}inner_lr_init sets the learned step sizes' start: set {MODEL}inner_lr: {LEARNED}, "
                    "or drop it"
                )
        self.inner_steps = inner_steps
        self.fixed_inner_lr: float | None = None if learned else inner_lr
        self.meta_sgd = MetaSGD(self.nz, checked_init(inner_lr_init)) if learned else None
        self._step_override: tuple[int, float | None] | None = None

    @property
    def inner_lr(self) -> float | Tensor:  # type: ignore[override]  # OriginModel's hook, read by the origin step
        """The step size the origin step takes: the fixed one, or the learned ones (nz,), clamped at 0."""
        if self._step_override is not None and self._step_override[1] is not None:
            return self._step_override[1]
        return self.fixed_inner_lr if self.meta_sgd is None else self.meta_sgd()

    @inner_lr.setter
    def inner_lr(self, value: float) -> None:
        if self.meta_sgd is not None:
            raise AttributeError("this model learns its inner step sizes (meta_sgd): use inner_loop() to override")
        self.fixed_inner_lr = value

    @contextmanager
    def inner_loop(self, steps: int, step_size: float | None = None) -> Iterator[None]:
        """Encode with `steps` inner steps (0: the origin itself) of `step_size` (None: the model's own, fixed or
        learned) instead of the trained settings, inside the block: the inner-step curve."""
        saved = self.inner_steps, self._step_override
        self.inner_steps, self._step_override = steps, (steps, step_size)
        try:
            yield
        finally:
            self.inner_steps, self._step_override = saved


def checked_init(init: float | tuple[float, float] | list[float] | None) -> float | tuple[float, float]:
    option = MODEL + "inner_lr_init"
    if init is None:
        return 1.0
    if isinstance(init, (int, float)):
        positive(option, init)
        return float(init)
    ok = len(init) == 2 and all(isinstance(v, (int, float)) for v in init) and 0 <= init[0] < init[1]
    require(ok, option, init, "a positive number or a range [low, high] with 0 <= low < high")
    return float(init[0]), float(init[1])
