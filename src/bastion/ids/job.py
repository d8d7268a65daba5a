"""The IDS evaluation as resumable store runs: detectors trained once, every attack against every detector, a report.

Runs (kinds): ``ids-detector`` (one trained detector: clean detection per class, false-positive rate, confusion
matrix; its weights in the work folder), ``ids-attack`` (one attack against one detector: success, validity and
valid success per class, the violated constraints, the feature changes, the cost), and ``ids`` (the whole
evaluation: the table, read back from the others). Each is keyed by the content that decides it, so a killed
evaluation resumes with nothing finished recomputed and evaluations that share a detector share its run.
"""

from __future__ import annotations

import inspect
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bastion
from bastion.attacks import get_attack
from bastion.errors import InvalidInputError
from bastion.ids.config import SNAPSHOT, Detector, Entry, IdsConfig
from bastion.ids.constraints import flow_threat
from bastion.ids.defenses import build_ids_defense
from bastion.ids.evasion import Evasion, evade, has_gradients
from bastion.ids.features import BENIGN
from bastion.ids.loaders import FlowTable, load_flows
from bastion.ids.models.factory import build_detector, categorical_columns, predict
from bastion.ids.models.io import load_detector, save_detector
from bastion.ids.models.training import train_detector
from bastion.ids.robust import adversarial_train
from bastion.store import Store
from bastion.threats.tabular import TabularThreat
from bastion.yamlfile import spec_hash

DETECTOR_KIND, ATTACK_KIND, RUN_KIND = "ids-detector", "ids-attack", "ids"
Progress = Callable[[str], None]


def snapshot_path() -> Path:
    return Path(__file__).parent / "data" / "flows.csv.gz"


@dataclass(frozen=True)
class World:
    """The split flows, the label scheme and the threat every attack of the evaluation runs in."""

    table: FlowTable
    train: np.ndarray  # row indices into table
    test: np.ndarray
    labels: tuple[str, ...]  # the detectors' output classes (BENIGN first)
    y: np.ndarray  # per row of the table, its index in ``labels``
    threat: TabularThreat

    def rows(self, index: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.table.features[index], dtype=torch.float64)


def _stratified(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for name in sorted(set(labels)):
        idx = rng.permutation(np.flatnonzero(labels == name))
        cut = max(1, round(len(idx) * fraction)) if len(idx) > 1 else 0
        test.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _cap(index: np.ndarray, labels: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` rows, each class keeping its share (and at least one row)."""
    if len(index) <= cap:
        return index
    keep = []
    for name in sorted(set(labels[index])):
        idx = index[labels[index] == name]
        keep.append(rng.choice(idx, max(1, round(cap * len(idx) / len(index))), replace=False))
    return np.sort(np.concatenate(keep))


def load_table(config: IdsConfig) -> FlowTable:
    path = snapshot_path() if config.data == SNAPSHOT else Path(config.data)
    fmt = "bastion" if config.data == SNAPSHOT else config.format
    return load_flows(path, format=fmt, nonfinite=config.nonfinite, extra=config.extra)


_WORLDS: dict[str, World] = {}


def world_of(config: IdsConfig) -> World:
    """The evaluation's world, built once per process for the same data, split and threat."""
    key = spec_hash(_data_key(config), config.norm, config.eps, config.constraints)
    if key not in _WORLDS:
        _WORLDS[key] = _build_world(config)
    return _WORLDS[key]


def _build_world(config: IdsConfig) -> World:
    table = load_table(config)
    if BENIGN not in table.classes or len(table.classes) < 2:
        raise InvalidInputError(f"{config.data}: the flows need benign and attack classes; found "
                                f"{', '.join(table.classes)}.")
    rng = np.random.default_rng(config.seed)
    train, test = _stratified(table.labels, config.test_fraction, rng)
    train = _cap(train, table.labels, config.max_train, rng)
    if config.labels == "binary":
        labels: tuple[str, ...] = (BENIGN, "ATTACK")
        y = table.binary_labels()
    else:
        labels, y = table.classes, table.class_index()
    threat = flow_threat(table.columns, table.features[train], norm=config.norm, eps=config.eps,
                         constraints=config.constraints, groups=table.groups)
    return World(table, train, test, labels, y, threat)


def run_environment() -> dict[str, Any]:
    return {"bastion": bastion.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine()}


def _data_key(config: IdsConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in ("data", "format", "nonfinite", "extra", "test_fraction", "max_train",
                                            "labels", "seed")}


def detector_key(config: IdsConfig, entry: Detector) -> str:
    """The trained detector's identity (the defense around it is applied after loading, so it is not part of it)."""
    trained = {"name": entry.name, "params": entry.params,
               "adversarial": entry.adversarial.model_dump(mode="json") if entry.adversarial else None}
    threat = (config.norm, config.eps, config.constraints) if entry.adversarial else None
    return spec_hash(_data_key(config), trained, config.training, threat)


def _weights(config: IdsConfig, entry: Detector, workdir: Path) -> Path:
    """Where the trained detector is kept: named by what it is trained as, so entries that differ only in the
    defense around it share it."""
    return workdir / "detectors" / f"{entry.name}-{detector_key(config, entry)}"


def train_entry(config: IdsConfig, entry: Detector, world: World) -> nn.Module:
    """The detector of ``entry`` trained on the training split: standard, or adversarially inside the world's
    threat (the same epochs, batch size and learning rate)."""
    generator = torch.Generator().manual_seed(config.seed + 17)
    x, y = world.table.features[world.train], world.y[world.train]
    categorical = categorical_columns(world.table.columns, world.table.categorical)
    model = build_detector(entry.name, x, len(world.labels), generator=generator, categorical=categorical,
                           **entry.params)
    t = config.training
    if entry.adversarial is None:
        model, _ = train_detector(model, x, y, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, generator=generator)
    else:
        adv = entry.adversarial
        model, _ = adversarial_train(model, x, y, world.threat, method=adv.method, ratio=adv.ratio, eps=adv.eps,
                                     epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, generator=generator,
                                     **adv.params)
    return model.eval()


def defended(entry: Detector, model: nn.Module, world: World) -> nn.Module:
    """The detector as deployed: inside its inference defense, if the entry names one."""
    if entry.defense is None:
        return model
    return build_ids_defense(entry.defense, model, world.threat, **entry.defense_params)


def _trained(config: IdsConfig, entry: Detector, world: World, path: Path) -> tuple[nn.Module, float]:
    """The trained detector and the seconds its training took: loaded when its weights exist, else trained (and
    saved; the tree model is retrained from its seed: scikit-learn has no format but pickle)."""
    if path.with_suffix(".safetensors").exists():
        model, meta = load_detector(path)
        return model, float(meta.get("extra", {}).get("train_seconds", float("nan")))
    started = time.perf_counter()
    model = train_entry(config, entry, world)
    seconds = time.perf_counter() - started
    if has_gradients(model):
        save_detector(model, path, columns=world.table.columns, classes=world.labels,
                      extra={"train_seconds": seconds})
    return model, seconds


def detector(config: IdsConfig, store: Store, entry: Detector, workdir: Path) -> tuple[str, nn.Module]:
    """The detector as deployed (trained, inside its defense) and its run, measured on the test split once."""
    world, key, path = world_of(config), detector_key(config, entry), _weights(config, entry, workdir)
    run_key = spec_hash(key, entry.defense, entry.defense_params)
    done = store.find_finished(DETECTOR_KIND, run_key)
    model, seconds = _trained(config, entry, world, path)
    model = defended(entry, model, world)
    if done:
        return done, model
    run_id = store.open_run(DETECTOR_KIND, run_key, {"detector": entry.model_dump(mode="json"), **_data_key(config)},
                            config.seed, run_environment())
    store.finish_run(run_id, {**clean_metrics(model, world), "train_seconds": seconds, "detector": entry.key})
    return run_id, model


def clean_metrics(model: nn.Module, world: World) -> dict[str, Any]:
    """On the test split: accuracy, detection rate per attack class, false-positive rate, confusion matrix."""
    pred = predict(model, world.rows(world.test)).numpy()
    truth, names = world.y[world.test], world.table.labels[world.test]
    alarm = pred != 0
    per_class = {c: float(alarm[names == c].mean()) for c in world.table.classes if c != BENIGN and (names == c).any()}
    benign = names == BENIGN
    confusion = [[int(((names == c) & (pred == j)).sum()) for j in range(len(world.labels))]
                 for c in world.table.classes]
    return {"accuracy": float((pred == truth).mean()), "false_positive_rate": float(alarm[benign].mean()),
            "detection_rate": float(alarm[~benign].mean()), "detection_per_class": per_class,
            "confusion": {"rows": list(world.table.classes), "columns": list(world.labels), "counts": confusion},
            "test_flows": len(world.test)}


def attack_rows(config: IdsConfig, world: World) -> np.ndarray:
    """Up to ``per_class`` test flows of each attack class (seeded)."""
    rng = np.random.default_rng(config.seed + 29)
    names = world.table.labels[world.test]
    picks = [rng.permutation(world.test[names == c])[:config.per_class] for c in world.table.classes if c != BENIGN]
    return np.sort(np.concatenate(picks))


def attack_key(config: IdsConfig, det: Detector, attack: Entry) -> str:
    return spec_hash(detector_key(config, det), det.defense, det.defense_params, attack.name, attack.params,
                     config.norm, config.eps, config.constraints, config.per_class)


def attack_cell(config: IdsConfig, store: Store, det: Detector, model: nn.Module, attack: Entry,
                surrogate: nn.Module | None, workdir: Path) -> str:
    key = attack_key(config, det, attack)
    done = store.find_finished(ATTACK_KIND, key)
    if done:
        return done
    world = world_of(config)
    run_id = store.open_run(ATTACK_KIND, key, {"detector": det.model_dump(mode="json"),
                                               "attack": attack.model_dump(mode="json"), "eps": config.eps,
                                               "norm": config.norm}, config.seed, run_environment())
    index = attack_rows(config, world)
    result = evade(model, world.rows(index), world.table.labels[index], world.threat, attack.name,
                   with_reference(attack, world), seed=config.seed, surrogate=surrogate)
    folder = workdir / "adversarial"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{det.key}-{attack.key}-{key}.npz", clean=result.clean.numpy(),
                        adversarial=result.adversarial.numpy(), classes=result.classes.astype(str),
                        columns=np.array(world.table.columns))
    store.finish_run(run_id, evasion_summary(result, world, det.key, attack.key, len(index)))
    return run_id


def with_reference(attack: Entry, world: World, rows: int = 2000) -> dict[str, Any]:
    """The attack's parameters, plus benign training flows as ``reference`` for an attack that takes them (the
    attacker's knowledge of normal traffic: KDE evasion, IDSGAN), unless the entry sets it."""
    params = dict(attack.params)
    if "reference" in inspect.signature(get_attack(attack.name).fn).parameters and "reference" not in params:
        benign = world.train[world.y[world.train] == 0]
        pick = np.random.default_rng(0).permutation(benign)[:rows]
        params["reference"] = world.rows(np.sort(pick))
    return params


def evasion_summary(result: Evasion, world: World, det: str, attack: str, sampled: int) -> dict[str, Any]:
    scale = world.threat.scale.to(result.clean)
    change = ((result.adversarial - result.clean).abs() / scale)
    valid = result.success
    mean_change = change[valid].mean(0) if valid.any() else torch.zeros(change.shape[1], dtype=change.dtype)
    top = torch.argsort(mean_change, descending=True)[:8]
    return {"detector": det, "attack": attack, "route": result.route, "sampled": sampled, **result.rates(),
            "per_class": result.per_class(), "violated": result.violated, "seconds": result.seconds,
            "forward_passes": result.forward, "backward_passes": result.backward,
            "feature_changes": {world.table.columns[i]: float(mean_change[i]) for i in top.tolist()
                                if mean_change[i] > 0}}


def run_ids(config: IdsConfig, store: Store, workdir: Path, progress: Progress | None = None) -> str:
    """Every detector trained, every attack run against every detector, the summary stored; resumes."""
    say = progress or (lambda _m: None)
    key = spec_hash(config)
    cells: dict[tuple[str, str], str] = {}
    detectors: dict[str, str] = {}
    models: dict[str, nn.Module] = {}
    for det in config.detectors:
        say(f"detector {det.key}")
        detectors[det.key], models[det.key] = detector(config, store, det, workdir)
    surrogate = next((m for m in models.values() if has_gradients(m)), None)
    if surrogate is not None:
        surrogate.name = next(k for k, m in models.items() if m is surrogate)  # type: ignore[assignment]
    for det in config.detectors:
        model = models[det.key]
        for attack in config.attacks:
            say(f"{attack.key} vs {det.key}")
            cells[(det.key, attack.key)] = attack_cell(config, store, det, model, attack, surrogate, workdir)
    run_id = store.find_finished(RUN_KIND, key) or store.open_run(RUN_KIND, key, config.model_dump(mode="json"),
                                                                  config.seed, run_environment())
    store.finish_run(run_id, summarize(config, store, detectors, cells))
    return run_id


def summarize(config: IdsConfig, store: Store, detectors: dict[str, str],
              cells: dict[tuple[str, str], str]) -> dict[str, Any]:
    world = world_of(config)
    counts = {c: int((world.table.labels == c).sum()) for c in world.table.classes}
    return {"name": config.name, "data": config.data, "flows": len(world.table), "class_counts": counts,
            "features": len(world.table.columns), "relations": len(world.threat.relations), "eps": config.eps,
            "norm": config.norm, "labels": config.labels,
            "detectors": {k: {**(store.get_run(r).summary or {}), "run_id": r} for k, r in detectors.items()},
            "cells": [{**(store.get_run(r).summary or {}), "run_id": r} for r in cells.values()]}


__all__ = ["ATTACK_KIND", "DETECTOR_KIND", "RUN_KIND", "World", "attack_cell", "detector", "run_ids", "world_of"]
