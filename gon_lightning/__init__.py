"""gon-lightning: Gradient Origin Networks and their baselines on PyTorch Lightning."""

import warnings
from typing import Any

__version__ = "0.1.0"

# Lightning 2.6 builds torch's deprecated LeafSpec whenever it wraps a dataloader (CombinedLoader): a FutureWarning
# at every fit that no user can act on. Silenced at that one call site only; Lightning's own fix will make it moot.
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"pytorch_lightning\.utilities\._pytree",
)


def __getattr__(name: str) -> Any:
    """`gon_lightning.origin_step` and `gon_lightning.from_pretrained`, imported when first used (importing the
    package stays light: the CLI's helpers and the errors need neither torch's autograd nor safetensors)."""
    if name == "origin_step":
        from gon_lightning.nn.origin import origin_step

        return origin_step
    if name == "from_pretrained":
        from gon_lightning.export import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'gon_lightning' has no attribute {name!r}")


__all__ = ["__version__", "from_pretrained", "origin_step"]
