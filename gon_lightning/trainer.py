"""Lightning's Trainer with gon-lightning's own subcommands beside fit, validate, test and predict.

LightningCLI makes a subcommand of each Trainer method it is told about: the method's signature becomes the
subcommand's options (documented by its docstring) and the CLI hands it the configured model and DataModule. So a
gon-lightning subcommand is a method here that delegates to the module doing the work, and one entry in
`SUBCOMMANDS`; `gon_lightning.cli` wires nothing per subcommand. The Trainer's loops are Lightning's, untouched.
"""

from __future__ import annotations

from pytorch_lightning import Trainer


class GONTrainer(Trainer):
    #: gon-lightning's subcommands, each with the method arguments the CLI fills itself (LightningCLI's skip sets)
    SUBCOMMANDS: dict[str, set[str]] = {}
