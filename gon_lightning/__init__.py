"""gon-lightning: Gradient Origin Networks and their baselines on PyTorch Lightning."""

import warnings

__version__ = "0.1.0"

# Lightning 2.6 builds torch's deprecated LeafSpec whenever it wraps a dataloader (CombinedLoader): a FutureWarning
# at every fit that no user can act on. Silenced at that one call site only; Lightning's own fix will make it moot.
warnings.filterwarnings(
    "ignore",
    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    category=FutureWarning,
    module=r"pytorch_lightning\.utilities\._pytree",
)
