"""The CLI's argument parser: LightningCLI's, with errors in a line or two instead of the usage and a Union dump."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import NoReturn

from jsonargparse import ArgumentParser
from pytorch_lightning.cli import LightningArgumentParser

# jsonargparse's message for an option a subclass (the model, the data) does not take
_NOT_ACCEPTED = re.compile(
    r'Parser key "(?P<group>[\w.]+)":.*?Problem with given class_path \'(?P<class_path>[\w.]+)\':'
    r"\s*Option '(?P<option>\w+)' is not accepted",
    re.S,
)
# a class name that is not a (concrete) subclass of the group's base
_NOT_A_CLASS = re.compile(r'Parser key "(?P<group>model|data)":\s*- Expected a path but (?P<value>\S+) either not')
# what went wrong with the class given (the other Union subtype is None, never what the user meant)
_CLASS_PROBLEM = re.compile(
    r'Parser key "(?P<group>[\w.]+)":.*?Problem with given class_path \'(?P<class_path>[\w.]+)\':\s*(?P<why>.*?)'
    r"\n\s*- Expected a <class 'NoneType'>",
    re.S,
)
_UNION = re.compile(
    r'Parser key "(?P<key>[\w.]+)":\s*Does not validate against any of the Union subtypes.*?Errors:(?P<errors>.*?)'
    r"Given value type:.*?Given value: (?P<value>.*)",
    re.S,
)


def _class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def options_of(class_path: str) -> list[str]:
    """The init options of a class as the CLI offers them (jsonargparse follows **kwargs to the bases)."""
    parser = ArgumentParser()
    parser.add_class_arguments(_class(class_path), "x")
    return [action.dest.removeprefix("x.") for action in parser._actions if action.dest.startswith("x.")]


def choices_of(base: type) -> list[str]:
    """The concrete subclasses of `base`, by name: what `--model` / `--data` accept."""
    found, todo = set(), [base]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if not inspect.isabstract(cls) and cls.__module__.startswith("gon_lightning."):
            found.add(cls.__name__)
    return sorted(found)


def _plain(text: str) -> str:
    text = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", text).replace("Expected a ", "expected ")
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def short_error(message: str) -> str:
    """jsonargparse's message, shortened and naming options by their full path; a misspelt model or data option
    is named with the options accepted."""
    if found := _NOT_ACCEPTED.search(message):
        group, class_path, option = found["group"], found["class_path"], found["option"]
        name = class_path.rsplit(".", 1)[-1]
        return (
            f"--{group}.init_args.{option}: {name} has no option {option!r}; its options: "
            f"{', '.join(options_of(class_path))} (--{group}.help {name} explains them)"
        )
    if found := _NOT_A_CLASS.search(message):
        from pytorch_lightning import LightningDataModule, LightningModule

        base = LightningModule if found["group"] == "model" else LightningDataModule
        return f"--{found['group']} {found['value']}: not one of {', '.join(choices_of(base))}"
    if found := _CLASS_PROBLEM.search(message):
        why = re.sub(r'Parser key "([\w.]+)":', rf"--{found['group']}.init_args.\1:", found["why"])
        return _plain(why)
    if found := _UNION.search(message):
        errors = [e for e in _plain(found["errors"]).split("- ") if e.strip() and "NoneType" not in e]
        return f"--{found['key']}: {'; '.join(e.strip() for e in errors)} (or null), got {found['value'].strip()}"
    return _plain(message)


class GONArgumentParser(LightningArgumentParser):
    """Parse errors print a short message (and where the options are explained), not the whole usage."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # parsed for a check, not for the user: the caller handles the error
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"gon-lightning: error: {short_error(message)}\n(all options: {prog} --help)\n")
        self.exit(2)
