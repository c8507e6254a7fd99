"""docs/extending.md runs as written: its files are written, its Python executed and its commands run, in order."""

from __future__ import annotations

import glob
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch

from gon_lightning.cli import main

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "extending.md"
# a fit of the guide's, kept to a couple of batches (the guide's own settings otherwise)
SMALL_FIT = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.logger=false"]


def guide_blocks() -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_the_guide_has_every_kind_of_block():
    kinds = [kind for kind, _ in guide_blocks()]
    assert {"python", "yaml", "bash"} == set(kinds) and kinds.count("python") >= 6


@pytest.mark.slow
def test_every_block_of_the_guide_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(tmp_path))  # what the guide's PYTHONPATH=. does; tests run in tmp_path
    namespace: dict = {}
    for kind, code in guide_blocks():
        first = code.splitlines()[0]
        if kind in ("python", "yaml") and re.fullmatch(r"# [\w.]+\.(py|yaml)", first):
            (tmp_path / first[2:]).write_text(code)  # a file the guide asks you to save
        elif kind == "python":
            exec(compile(code, str(GUIDE), "exec"), namespace)
        else:
            for line in code.strip().splitlines():
                tokens = shlex.split(line.removeprefix("PYTHONPATH=. "))
                assert tokens[0] == "gon-lightning", line
                args = [expanded for token in tokens[1:] for expanded in (sorted(glob.glob(token)) or [token])]
                main(args + SMALL_FIT if args[0] == "fit" else args)
    for name in ("my_nets", "my_models"):
        sys.modules.pop(name, None)
    assert namespace["samples"].shape == (8, 1, 32, 32)  # the last block's: the exported model, loaded
    assert namespace["learnt"] != 0.5  # the inner step size learnt
    assert namespace["first"].shape == (32, 1, 32, 32) and namespace["first"].dtype == torch.uint8
    assert torch.isfinite(namespace["outer"])
    assert {p.name for p in (tmp_path / "my_gon_export").iterdir()} >= {"model.safetensors", "config.json", "README.md"}
