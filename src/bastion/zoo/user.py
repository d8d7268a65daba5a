"""A user's own model: ``file.py:attr`` or ``package.module:attr`` (a factory, a class or a module object), a
TorchScript file, with optional weights (``.safetensors``, or a ``.pt``/``.pth`` state dict read with
``torch.load(weights_only=True)``).

Nothing here unpickles a whole module: a model's code comes from the user's own source file or package (which they
name on purpose, as they would ``python my_model.py``), its numbers from a weights file read as plain tensors.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion.errors import CheckpointError, InvalidInputError


def is_model_reference(spec: str) -> bool:
    """Whether ``spec`` names code (``file.py:attr`` or ``package.module:attr``) rather than a zoo name or file."""
    head, sep, attr = spec.rpartition(":")
    return bool(sep and head and attr.isidentifier() and (head.endswith(".py") or _is_dotted(head)))


def is_torchscript(path: str | Path) -> bool:
    """A TorchScript archive: a zip with the serialized code (``*/code/``) and constants."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def load_user_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """The model that ``spec`` names, in eval mode, with ``weights`` loaded if given (see the module docstring)."""
    if is_torchscript(spec):
        model = _load_torchscript(Path(spec))
    elif is_model_reference(spec):
        model = _build(spec)
    else:
        raise InvalidInputError(
            f"--model {spec!r} is neither a zoo name, a checkpoint, a TorchScript file nor code; name your model "
            "as path/to/file.py:make_model or package.module:make_model (a factory, class or module object)."
        )
    if weights is not None:
        load_weights(model, Path(weights), spec)
    return model.eval()


def load_weights(model: nn.Module, path: Path, spec: str = "the model") -> None:
    """Load a state dict from ``.safetensors`` or ``.pt``/``.pth`` (tensors only) into ``model``, strictly."""
    if not path.is_file():
        raise InvalidInputError(f"--weights {path} does not exist; give the path of a .safetensors or .pt file.")
    state = _read_state(path)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"The weights in {path} do not fit {spec}: missing {result.missing_keys[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}; save them with model.state_dict() from the same architecture."
        )


def fingerprint(model: nn.Module) -> str:
    """A short hash of a model's class and its parameters and buffers (identifies an in-memory model's run)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]


def _is_dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _build(spec: str) -> nn.Module:
    where, _, attr = spec.rpartition(":")
    module = _import_file(Path(where)) if where.endswith(".py") else _import_module(where)
    if not hasattr(module, attr):
        names = sorted(n for n in vars(module) if not n.startswith("_"))[:12]
        raise InvalidInputError(f"{where} has no {attr!r}; names there: {', '.join(names)}.")
    obj = getattr(module, attr)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise InvalidInputError(f"{spec} is a {type(obj).__name__}; point --model at a factory, class or nn.Module.")
    try:
        model = obj()
    except Exception as exc:  # the user's code: any error it raises is theirs to fix
        raise InvalidInputError(
            f"Calling {attr}() from {where} raised {type(exc).__name__}: {exc}; fix it so that {attr}() returns the "
            "model with no arguments."
        ) from None
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"{attr}() from {where} returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise InvalidInputError(f"--model file {path} does not exist; give the path of the .py file that defines it.")
    name = f"bastion_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free torch helpers look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise InvalidInputError(f"Importing {path} raised {type(exc).__name__}: {exc}; fix the file.") from None
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InvalidInputError(f"Cannot import {name!r} ({exc}); install the package or give path/to/file.py:NAME.") \
            from None


def _load_torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise CheckpointError(f"{path} is not a loadable TorchScript file ({str(exc).splitlines()[0]}); "
                              "save it with torch.jit.save(torch.jit.script(model), path).") from None


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}).") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} cannot be read as plain tensors ({first}); bastion never unpickles code from a file: save "
            "model.state_dict() with torch.save or safetensors."
        ) from None
    for key in ("state_dict", "model_state_dict", "model"):  # common training-checkpoint layouts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (name -> tensor); save model.state_dict().")
    return state
