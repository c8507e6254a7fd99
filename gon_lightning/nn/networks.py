"""Own networks in place of the built-in ones: what a model's `decoder` or `encoder` option may be, how it becomes a
network, and the check, when the model is built, that the network maps what the model gives to what it expects.

A network is named the way LightningCLI names an optimizer: by `class_path` and `init_args`, the model supplying
the first two constructor arguments, `nz` and `image_shape` (channels, height, width). From Python it may also be
a class or a callable taking those two arguments, or a built `nn.Module`. Checkpoints and exports record the
network as `{class_path, init_args}` (docs/extending.md), so a module built in Python cannot be recorded: its
checkpoints load only when it is passed again.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from gon_lightning.errors import UserError

#: what a `decoder`/`encoder` option takes: a callable (nz, image_shape) -> nn.Module, a class above all
NetworkFactory = Callable[[int, tuple[int, int, int]], nn.Module]
#: the key of what checkpoints record for a network given as a built module, which they cannot rebuild
MODULE_GIVEN = "module_given_in_python"


def import_path(obj: Any) -> str:
    """`module.QualifiedName` of a class or function."""
    return f"{obj.__module__}.{obj.__qualname__}"


def import_object(path: str, option: str) -> Any:
    """The class or function an import path names; one line naming the option when it cannot be imported."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else importlib.import_module(name)
    except (ImportError, AttributeError) as error:
        raise UserError(f"{option}: {path} cannot be imported ({type(error).__name__}: {error})") from error


def recorded_network(spec: Any) -> Any:
    """What a model's hyperparameters (and so its checkpoints and exports) record of a network option: None, an
    import path, or `{class_path, init_args}`; a module built in Python is recorded by its class only, as a marker
    that `build_network` refuses (its constructor's arguments are unknown)."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return {key: dict(value) if isinstance(value, Mapping) else value for key, value in spec.items()}
    if isinstance(spec, nn.Module):
        return {MODULE_GIVEN: import_path(type(spec))}
    if isinstance(spec, functools.partial) and inspect.isclass(spec.func) and not spec.args:
        return {"class_path": import_path(spec.func), "init_args": dict(spec.keywords)}
    if callable(spec) and hasattr(spec, "__qualname__") and "<" not in spec.__qualname__:
        return import_path(spec)  # a class or a module-level function
    return {MODULE_GIVEN: repr(spec)}


def build_network(spec: Any, nz: int, image_shape: tuple[int, int, int], option: str) -> nn.Module | None:
    """The network a `decoder`/`encoder` option names, or None when it is unset (the model's built-in one)."""
    if spec is None:
        return None
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, Mapping) and MODULE_GIVEN in spec:
        raise UserError(
            f"{option}: this model was built with a {spec[MODULE_GIVEN]} module made in Python, which a checkpoint "
            "cannot rebuild: pass it again (load_from_checkpoint(path, decoder=...)), or give the network by class "
            "(class_path/init_args) so checkpoints and exports record it"
        )
    if isinstance(spec, Mapping):
        if "class_path" not in spec:
            raise UserError(f"{option} must name a class_path (and its init_args), got {dict(spec)!r}")
        factory = import_object(spec["class_path"], option)
        init_args = dict(spec.get("init_args") or {})
    elif isinstance(spec, str):
        factory, init_args = import_object(spec, option), {}
    elif callable(spec):
        factory, init_args = spec, {}
    else:
        raise UserError(f"{option} must be a class_path/init_args, a class or an nn.Module, got {spec!r}")
    try:
        network = factory(nz, tuple(image_shape), **init_args)
    except UserError:
        raise
    except Exception as error:
        name = getattr(factory, "__name__", repr(factory))
        first = str(error).splitlines()[0] if str(error) else ""
        raise UserError(
            f"{option}: {name}(nz={nz}, image_shape={tuple(image_shape)}, **init_args) failed "
            f"({type(error).__name__}: {first})"
        ) from error
    if not isinstance(network, nn.Module):
        raise UserError(f"{option}: {spec!r} made a {type(network).__name__}, not a torch.nn.Module")
    return network


def _probe(network: nn.Module, inputs: Tensor, option: str, what: str) -> Any:
    """One forward pass in eval mode, without gradients (no BatchNorm statistics move, no global random draw)."""
    training = network.training
    network.eval()
    try:
        with torch.no_grad():
            return network(inputs)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else ""
        name, shape = type(network).__name__, tuple(inputs.shape)
        raise UserError(f"{option}: {name} fails on {what} {shape} ({type(error).__name__}: {first})") from error
    finally:
        network.train(training)


def _dtype_of(network: nn.Module) -> torch.dtype:
    return next((p.dtype for p in network.parameters() if p.is_floating_point()), torch.get_default_dtype())


def check_decoder(decoder: nn.Module, nz: int, image_shape: tuple[int, int, int], option: str, model: str) -> None:
    """Refuse a decoder that does not map latents (B, nz) to images (B, C, H, W) in [0, 1]: one probe with two
    random latents (drawn from a generator of its own, so the global seed's sequence is untouched)."""
    z = torch.randn(2, nz, generator=torch.Generator().manual_seed(0)).to(_dtype_of(decoder))
    out = _probe(decoder, z, option, "latents")
    expected = (2, *image_shape)
    name = type(decoder).__name__
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"{option}: {name} maps latents (2, {nz}) to {got}; {model} needs {expected} (B, *image_shape)")
    if not torch.isfinite(out).all() or out.min() < 0 or out.max() > 1:
        raise UserError(
            f"{option}: {name}'s output spans [{float(out.min()):.3g}, {float(out.max()):.3g}]; {model} decodes "
            "images in [0, 1] (end the decoder with a sigmoid)"
        )


def check_encoder(encoder: nn.Module, nz: int, image_shape: tuple[int, int, int], option: str, model: str) -> None:
    """Refuse an encoder that does not map images (B, C, H, W) to (B, nz)."""
    x = torch.rand(2, *image_shape, generator=torch.Generator().manual_seed(0)).to(_dtype_of(encoder))
    out = _probe(encoder, x, option, "images")
    name = type(encoder).__name__
    if not isinstance(out, Tensor) or tuple(out.shape) != (2, nz):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(f"{option}: {name} maps images {tuple(x.shape)} to {got}; {model} needs (2, {nz}) (B, nz)")
    if not torch.isfinite(out).all():
        raise UserError(f"{option}: {name}'s output is not finite")
