"""Resolving a run's names and files into a ``Setup``: zoo names and checkpoints, a user's model (code, TorchScript,
weights) and data (files, folders), remote endpoints, the threat and the device. The CLI, sweeps and compare call
``prepare`` and hand the result to the API; ``evaluation.job.run`` runs it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.data.user import load_user_data
from bastion.errors import InvalidInputError
from bastion.evaluation.config import EvalConfig
from bastion.evaluation.setup import Setup, check_fits
from bastion.threat import LpThreat
from bastion.threats import threat_from_dict
from bastion.validate import probe_model
from bastion.zoo import load_model
from bastion.zoo.user import is_model_reference, is_torchscript, load_user_model


def prepare(config: EvalConfig) -> Setup:
    """Resolve ``config``'s names and files into a ``Setup`` (see ``_resolve``). Asking for more points than the data
    has evaluates the points there are, says so in ``Setup.note`` and stores the ``n`` that was evaluated."""
    setup = _resolve(config)
    got = len(setup.points)
    if got >= config.n:
        return setup
    where = config.data if config.data is not None else f"the {config.split} split"
    note = (f"--n {config.n} asked for, but {where} has {got} points from offset {config.offset}: evaluating "
            f"{got} (stored as n={got})")
    return replace(setup, config=setup.config.model_copy(update={"n": got}),
                   note="; ".join(filter(None, [setup.note, note])))


def _resolve(config: EvalConfig) -> Setup:
    """Load model and data, check they fit, build the threat model; ``config.dataset`` filled in.

    A model given as an ``http(s)://`` URL is a remote black-box endpoint (``bastion.blackbox.http``); a model
    given as code (``file.py:attr``, ``package.module:attr``) or a TorchScript file, or data given as a file
    (``config.data``), is the user's own (``zoo.user``, ``data.user``).
    """
    if config.model.startswith(("http://", "https://")):
        return _prepare_remote(config)
    if config.data is not None or is_model_reference(config.model) or is_torchscript(config.model):
        return _prepare_user(config)
    model, meta = _load_named(config.model)
    dataset = config.dataset or meta.dataset
    data = load_dataset(dataset, seed=config.seed)
    check_fits(config.model, meta, data)
    threat = _threat(config, data.spec.lower, data.spec.upper)
    full = config.model_copy(update={"dataset": dataset})
    return Setup(model, _points(data.split(config.split), config), threat, full, data.spec.num_classes)


def _load_named(name: str) -> tuple[nn.Module, Any]:
    if name.endswith((".pt", ".module.safetensors")):
        from bastion.compare.deployable import load_built

        return load_built(name)
    return load_model(name)


def _points(split: Split, config: EvalConfig) -> Split:
    if config.offset >= len(split):
        raise InvalidInputError(f"offset {config.offset} is past the end of the data ({len(split)} points).")
    end = config.offset + config.n
    return Split(split.x[config.offset:end], split.y[config.offset:end])


def _prepare_user(config: EvalConfig) -> Setup:
    """A user's model (code or TorchScript, optional weights) and/or a user's data file."""
    if is_model_reference(config.model) or is_torchscript(config.model):
        model = load_user_model(config.model, config.weights)
    else:
        model = _load_named(config.model)[0]
    if config.data is None:
        if config.dataset is None:
            raise InvalidInputError("A model given as code has no record of its data: give --data FILE or "
                                    "--dataset NAME (bastion data list).")
        data = load_dataset(config.dataset, seed=config.seed)
        points, lower, upper, note = _points(data.split(config.split), config), data.spec.lower, data.spec.upper, ""
    else:
        user = load_user_data(config.data, label_column=config.label_column, lower=config.lower, upper=config.upper)
        points, lower, upper, note = _points(Split(user.x, user.y), config), user.lower, user.upper, user.describe()
    num_classes = probe_model(model, points.x)
    threat = _threat(config, lower, upper)
    return Setup(model, points, threat, config, num_classes, note)


def _threat(config: EvalConfig, lower: Any, upper: Any) -> Any:
    """The run's threat: the stored ``to_dict`` form where the config has one (``--threat FILE.json``), else norm
    and eps in the data's box."""
    if config.threat is None:
        return LpThreat(config.norm, config.eps, lower=lower, upper=upper)
    threat = threat_from_dict(config.threat)
    if not isinstance(threat, LpThreat):
        raise InvalidInputError(f"The evaluation job runs Lp threats so far, not {threat.kind}; run other kinds "
                                "batch by batch with bastion.evaluation.runner.run_attack.")
    if (threat.norm, threat.eps) != (config.norm, config.eps) and not isinstance(threat.eps, torch.Tensor):
        raise InvalidInputError(f"--threat says {threat.norm} eps {threat.eps} but the run asks for {config.norm} "
                                f"eps {config.eps}; give the same norm and eps (--norm, --eps) or drop one.")
    return threat


def _prepare_remote(config: EvalConfig) -> Setup:
    from bastion.attacks import get_attack
    from bastion.blackbox.http import RemoteModel

    if config.dataset is None:
        raise InvalidInputError("A remote target needs --dataset: bastion cannot ask the endpoint what data it takes.")
    if config.attack is None or get_attack(config.attack).access == "white-box":
        raise InvalidInputError(
            "A remote target answers scores or labels only, so gradient attacks and the white-box suite cannot run; "
            "use a score- or decision-based attack: square, nes, spsa, zoo, hopskipjump, boundary."
        )
    data = load_dataset(config.dataset, seed=config.seed)
    threat = _threat(config, data.spec.lower, data.spec.upper)
    points = _points(data.split(config.split), config)
    remote = RemoteModel(config.model, num_classes=data.spec.num_classes,
                         scores_needed=get_attack(config.attack).access == "score")
    return Setup(remote.eval(), points, threat, config, data.spec.num_classes)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: the first CUDA device if there is one, else the CPU; otherwise the device named."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise InvalidInputError(f"Unknown device {device!r}; use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"Device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu.")
    return dev
