"""Run a stealing experiment: every attack against every output defense, watched by every detector, stored.

Every finished piece is a run in the results store: each defense is a ``steal-defense`` run (what it costs honest
users), each detector a ``steal-detector`` run (its false alarms on honest users), each (attack, defense) pair a
``steal-cell`` run whose metrics hold the copy's accuracy and fidelity at every checkpoint of the budget, and the
experiment a ``steal`` run whose summary holds the table. A cell keeps, in its work folder, the transcript of the
answers it got and the copy of its last checkpoint; a killed or stopped cell resumes by replaying the transcript
(the victim is not asked again) and skipping the checkpoints already measured.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bastion.blackbox.target import RemoteTargetError
from bastion.blackbox.transfer import transfer_attack
from bastion.data import load_dataset
from bastion.data.base import Split
from bastion.errors import BastionError, InvalidInputError
from bastion.evaluation.sweep import Event
from bastion.registry import check_params
from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, STEAL_ATTACKS, load_algorithms
from bastion.stealing.base import DefenseContext, QueryAPI, ThiefView, Transcript, VictimSpec, as_probabilities
from bastion.stealing.config import NOISE, NONE, Entry, StealConfig, check_names
from bastion.stealing.copy import CopyRecipe
from bastion.stealing.metrics import agreement, false_alarms, first_flag, predict
from bastion.store import Store
from bastion.threat import LpThreat
from bastion.yamlfile import spec_hash

CELL_KIND, DEFENSE_KIND, DETECTOR_KIND, RUN_KIND = "steal-cell", "steal-defense", "steal-detector", "steal"
FORMAT = 1  # bump when the meaning of a stored cell changes


@dataclass(frozen=True)
class World:
    """Everything a run resolves once: the victim, its data, the thief's pool and seed set."""

    victim: nn.Module
    spec: VictimSpec
    val: Split
    test: Split
    benign: Tensor  # the whole test split, for the honest users' streams
    pool: Tensor
    pool_labels: Tensor | None
    seed: Tensor
    victim_labels: Tensor  # the plain victim's answers on ``test``: what fidelity is measured against


@dataclass
class StealResult:
    run_id: str
    cells: dict[tuple[str, str], str]


# resolving names ----------------------------------------------------------------------------------------------
def load_victim(config: StealConfig, num_classes: int) -> nn.Module:
    if config.target:
        from bastion.blackbox.http import RemoteModel

        return RemoteModel(config.target, num_classes=num_classes)
    from bastion.zoo import MODELS, load_model
    from bastion.zoo.user import load_user_model

    if config.victim in MODELS:
        return load_model(config.victim)[0].eval()
    return load_user_model(config.victim, config.weights).eval()


_WORLDS: dict[str, World] = {}


def world_of(config: StealConfig) -> World:
    """The run's world, resolved once per process (the victim, data, pool and seed set of the config)."""
    key = _world_key(config)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = _world(config)
    return _WORLDS[key]


def _world_key(config: StealConfig) -> str:
    return spec_hash(config.model_dump(mode="json", include={"victim", "weights", "target", "dataset", "val_size",
                                                             "test_size", "pool", "pool_size", "pool_resize",
                                                             "seed_size", "seed"}))


def _world(config: StealConfig) -> World:
    data = load_dataset(config.dataset, seed=config.seed)
    spec = VictimSpec(tuple(data.spec.shape), data.spec.num_classes, float(data.spec.lower), float(data.spec.upper))
    pool, pool_labels = _pool(config, spec)
    victim = load_victim(config, spec.num_classes)
    test = data.test.take(config.test_size)
    return World(victim, spec, data.val.take(config.val_size), test, data.test.x, pool, pool_labels,
                 data.train.x[:config.seed_size], predict(victim, test.x))


def _pool(config: StealConfig, spec: VictimSpec) -> tuple[Tensor, Tensor | None]:
    if config.pool == NOISE:
        g = torch.Generator().manual_seed(config.seed + 7)
        return spec.lower + (spec.upper - spec.lower) * torch.rand(config.pool_size, *spec.shape, generator=g), None
    d = load_dataset(config.pool, seed=config.seed)
    x, shape = d.train.x[:config.pool_size], tuple(d.spec.shape)
    resizable = len(shape) == len(spec.shape) == 3 and shape[0] == spec.shape[0]
    if shape != spec.shape and not (config.pool_resize and resizable):
        fix = "set `pool_resize: true` to resize its images, " if resizable else ""
        raise InvalidInputError(
            f"The pool {config.pool!r} has inputs of shape {'x'.join(map(str, shape))} but the victim takes "
            f"{'x'.join(map(str, spec.shape))}; {fix}choose a pool of the victim's shape, or `pool: noise`.")
    if shape != spec.shape:
        x = torch.nn.functional.interpolate(x, size=spec.shape[1:], mode="bilinear", align_corners=False)
        x = x.clamp(spec.lower, spec.upper)
    return x, d.train.y[:config.pool_size]


def recipe_of(config: StealConfig) -> CopyRecipe:
    t = config.thief
    return CopyRecipe(arch=t.arch, epochs=t.epochs, min_steps=t.min_steps, batch_size=t.batch_size, lr=t.lr,
                      seed=config.seed, arch_kwargs=dict(t.arch_kwargs))


def context(config: StealConfig, world: World) -> DefenseContext:
    return DefenseContext(world.val.x, world.val.y, world.spec, torch.Generator().manual_seed(config.seed + 1),
                          victim=world.victim)


_DEPLOYED: dict[tuple[str, str], nn.Module] = {}


def deployed(config: StealConfig, world: World, defense: Entry) -> nn.Module:
    """The victim as deployed behind ``defense`` (``none``: the plain victim), built once per world and defense (a
    defense that trains, such as adaptive misinformation, is not trained again for every attack)."""
    if defense.name == NONE:
        return world.victim
    key = (_world_key(config), spec_hash(defense.name, defense.params, config.seed))
    if world is not _WORLDS.get(key[0]):  # a world built outside world_of: nothing shared
        return _build_defense(config, world, defense)
    if key not in _DEPLOYED:
        if all(k[0] != key[0] for k in _DEPLOYED):
            _DEPLOYED.clear()
        _DEPLOYED[key] = _build_defense(config, world, defense)
    return _DEPLOYED[key]


def _build_defense(config: StealConfig, world: World, defense: Entry) -> nn.Module:
    spec = OUTPUT_DEFENSES.get(defense.name)
    params = check_params("output defense", defense.name, defense.params, spec.defaults)
    return spec.fn(world.victim, context(config, world), **params).eval()


# keys and files -----------------------------------------------------------------------------------------------
def _base(config: StealConfig) -> dict[str, Any]:
    return {"format": FORMAT, **config.model_dump(mode="json", include={
        "victim", "weights", "target", "dataset", "val_size", "test_size", "seed"})}


def cell_key(config: StealConfig, attack: Entry, defense: Entry) -> str:
    thief = config.model_dump(mode="json", include={"pool", "pool_size", "pool_resize", "seed_size", "budget", "thief",
                                                    "transfer"})
    return spec_hash(_base(config), thief, sorted(config.budget_points), attack.name, attack.params,
                     defense.name, defense.params)


def cell_dir(config: StealConfig, attack: Entry, defense: Entry, workdir: Path) -> Path:
    return workdir / "cells" / f"{_slug(attack.key)}-{_slug(defense.key)}-{cell_key(config, attack, defense)}"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save_transcript(t: Transcript, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if t.answers:
        save_file({"answers": torch.cat(t.answers).contiguous()}, str(folder / "answers.safetensors"))
    (folder / "transcript.json").write_text(json.dumps({"sizes": t.sizes, "digests": t.digests}))


def load_transcript(folder: Path) -> Transcript | None:
    meta, answers = folder / "transcript.json", folder / "answers.safetensors"
    if not meta.exists() or not answers.exists():
        return None
    m = json.loads(meta.read_text())
    parts = list(load_file(str(answers))["answers"].split(m["sizes"]))
    return Transcript(list(m["sizes"]), list(m["digests"]), parts)


def _env() -> dict[str, Any]:
    from bastion.evaluation.job import environment

    return environment()


# the pieces ---------------------------------------------------------------------------------------------------
def run_defense(config: StealConfig, store: Store, defense: Entry) -> tuple[str, dict[str, Any]]:
    """What ``defense`` costs honest users: their accuracy on the test split, with and without it."""
    key = spec_hash(_base(config), defense.name, defense.params)
    done = store.find_finished(DEFENSE_KIND, key)
    if done:
        return done, store.get_run(done).summary or {}
    run_id = store.open_run(DEFENSE_KIND, key, {"defense": defense.model_dump(mode="json")}, config.seed, _env())
    world, started = world_of(config), time.perf_counter()
    module = deployed(config, world, defense)
    built = time.perf_counter() - started
    with torch.no_grad():
        out = torch.cat([module(world.test.x[i:i + 500]) for i in range(0, len(world.test), 500)])
        plain = torch.cat([as_probabilities(world.victim(world.test.x[i:i + 500]))
                           for i in range(0, len(world.test), 500)])
    labels = out.long() if out.dim() == 1 else out.argmax(1)
    summary = {"defense": defense.key, "name": defense.name, "answers": "labels" if out.dim() == 1 else "probs",
               "victim_accuracy": agreement(world.victim_labels, world.test.y),
               "honest_accuracy": agreement(labels, world.test.y),
               "label_changes": 1 - agreement(labels, world.victim_labels),
               "mean_l1_distortion": float((out - plain).abs().sum(1).mean()) if out.dim() == 2 else None,
               "build_seconds": built}
    summary["accuracy_loss"] = summary["victim_accuracy"] - summary["honest_accuracy"]
    store.finish_run(run_id, summary)
    return run_id, summary


def benign_streams(config: StealConfig, world: World) -> list[Tensor]:
    """The honest users: each sends ``benign_queries`` natural test-split inputs in a seeded random order."""
    g = torch.Generator().manual_seed(config.seed + 3)
    n = world.benign.shape[0]
    return [world.benign[torch.randperm(n, generator=g)[:config.benign_queries]] for _ in range(config.benign_clients)]


def run_detector(config: StealConfig, store: Store, detector: Entry) -> tuple[str, dict[str, Any]]:
    """A detector's false alarms: after how many queries it flags each honest user (never, mostly)."""
    key = spec_hash(_base(config), detector.name, detector.params, config.benign_clients, config.benign_queries)
    done = store.find_finished(DETECTOR_KIND, key)
    if done:
        return done, store.get_run(done).summary or {}
    run_id = store.open_run(DETECTOR_KIND, key, {"detector": detector.model_dump(mode="json")}, config.seed, _env())
    world, started = world_of(config), time.perf_counter()
    flags = false_alarms(_detector_factory(config, world, detector), benign_streams(config, world))
    summary = {"detector": detector.key, "name": detector.name, "benign_clients": len(flags),
               "benign_queries": config.benign_queries, "benign_flags": flags,
               "false_alarm_rate": (sum(f is not None for f in flags) / len(flags)) if flags else None,
               "seconds": time.perf_counter() - started}
    store.finish_run(run_id, summary)
    return run_id, summary


def _detector_factory(config: StealConfig, world: World, detector: Entry) -> Callable[[], Any]:
    spec = DETECTORS.get(detector.name)
    params = check_params("extraction detector", detector.name, detector.params, spec.defaults)
    ctx = context(config, world)
    return lambda: spec.fn(ctx, **params)


class _Scores(nn.Module):
    """A deployed model seen as scores: label answers become one-hot rows (transfer attacks take the argmax)."""

    def __init__(self, module: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.module, self.num_classes = module, num_classes

    def forward(self, x: Tensor) -> Tensor:
        out = self.module(x)
        return torch.nn.functional.one_hot(out.long(), self.num_classes).float() if out.dim() == 1 else out


def run_cell(config: StealConfig, store: Store, attack: Entry, defense: Entry, workdir: Path) -> str:
    """One attack against one defended victim: the copy scored at every checkpoint, transfer, detection."""
    key = cell_key(config, attack, defense)
    done = store.find_finished(CELL_KIND, key)
    if done:
        return done
    folder = cell_dir(config, attack, defense, workdir)
    run_id = store.open_run(CELL_KIND, key, {"attack": attack.model_dump(mode="json"),
                                             "defense": defense.model_dump(mode="json")}, config.seed, _env())
    world, recipe = world_of(config), recipe_of(config)
    module = deployed(config, world, defense)
    measured = {int(r["step"]) for r in store.metrics(run_id, "fidelity")}
    api = QueryAPI(module, budget=config.budget, replay=load_transcript(folder))
    spent: dict[str, Any] = {"copy": 0.0, "last": None}

    def score(queries: int, x: Tensor, answers: Tensor) -> None:
        if queries in measured:
            return
        started = time.perf_counter()
        copy = view.copy(x, answers)  # the thief's recipe, or the attack's own solver
        spent["copy"] += time.perf_counter() - started
        spent["last"] = copy
        pred = predict(copy, world.test.x)
        save_file(copy.state_dict(), str(folder / "copy.safetensors"))
        save_transcript(api.transcript, folder)
        store.record_metrics(run_id, [("accuracy", queries, agreement(pred, world.test.y)),
                                      ("fidelity", queries, agreement(pred, world.victim_labels))])
        measured.add(queries)

    folder.mkdir(parents=True, exist_ok=True)
    attack_spec = STEAL_ATTACKS.get(attack.name)
    params = check_params("extraction attack", attack.name, attack.params, attack_spec.defaults)
    view = ThiefView(api, world.pool, world.seed, world.spec, lambda x, a: recipe.fit(x, a, world.spec),
                     torch.Generator().manual_seed(config.seed + 11), pool_labels=world.pool_labels,
                     checkpoints=tuple(config.budget_points), on_checkpoint=score)
    started = time.perf_counter()
    try:
        attack_spec.fn(view, **params)
        view.finish()
    except RemoteTargetError as err:
        save_transcript(api.transcript, folder)
        if api.used and api.used not in measured:
            score(api.used, *view.answered())
        store.set_status(run_id, "stopped")
        raise BastionError(
            f"The target stopped answering after {api.used} of {config.budget} queries ({err}). The answers so far, "
            f"the copy and the curve up to {max(measured, default=0)} queries are kept (run {run_id}); run the same "
            "command again to resume without asking the answered queries again.") from None
    attack_seconds = time.perf_counter() - started - spent["copy"]
    save_transcript(api.transcript, folder)
    copy = spent["last"] if spent["last"] is not None else view.copy(*view.answered())
    store.finish_run(run_id, _cell_summary(config, world, attack, defense, view, copy, module, attack_seconds))
    return run_id


def _cell_summary(config: StealConfig, world: World, attack: Entry, defense: Entry, view: ThiefView,
                  copy: nn.Module, module: nn.Module, attack_seconds: float) -> dict[str, Any]:
    pred = predict(copy, world.test.x)
    stream = view.answered()[0]
    detection = {d.key: first_flag(_detector_factory(config, world, d)(), stream) for d in config.detectors}
    access = STEAL_ATTACKS.get(attack.name).access
    return {"attack": attack.key, "defense": defense.key, "queries": view.api.used, "answers": view.api.answers,
            "fell_back_to_labels": access == "probs" and view.api.answers == "labels",
            "accuracy": agreement(pred, world.test.y), "fidelity": agreement(pred, world.victim_labels),
            "transfer": _transfer(config, world, copy, module), "detection": detection,
            "replayed_queries": view.api.replayed, "replay_diverged": view.api.diverged,
            "attack_seconds": attack_seconds}


def _transfer(config: StealConfig, world: World, copy: nn.Module, module: nn.Module) -> dict[str, Any] | None:
    t = config.transfer
    n = min(t.points, len(world.test))
    if n == 0:
        return None
    threat = LpThreat(t.norm, t.eps, world.spec.lower, world.spec.upper)  # type: ignore[arg-type]
    result = transfer_attack(_Scores(module, world.spec.num_classes), copy, world.test.x[:n], world.test.y[:n],
                             threat, attack=t.attack, generator=torch.Generator().manual_seed(config.seed + 5))
    return {"attack": t.attack, "norm": t.norm, "eps": t.eps, "points": n, "success_rate": result.success_rate,
            "on_copy": result.surrogate_success_rate}


# the experiment -----------------------------------------------------------------------------------------------
def run_steal(config: StealConfig, store: Store, workdir: Path,
              on_event: Callable[[Event], None] | None = None) -> StealResult:
    """Run (or resume) the whole experiment; returns the ``steal`` run and its cells."""
    load_algorithms()
    check_names(config)
    world_of(config)  # bad victims, data and pools fail here, before anything is stored
    total = len(config.defenses) + len(config.detectors) + len(config.attacks) * len(config.defenses)
    done = 0

    def tell(phase: str, name: str, run_id: str, skipped: bool) -> None:
        nonlocal done
        done += 1
        if on_event is not None:
            on_event(Event(phase, name, run_id, skipped, done, total))

    defenses = {}
    for d in config.defenses:
        had = store.find_finished(DEFENSE_KIND, spec_hash(_base(config), d.name, d.params))
        run_id, defenses[d.key] = run_defense(config, store, d)
        tell("defense", d.key, run_id, had is not None)
    detectors = {}
    for d in config.detectors:
        run_id, detectors[d.key] = run_detector(config, store, d)
        tell("detector", d.key, run_id, False)
    cells: dict[tuple[str, str], str] = {}
    for a in config.attacks:
        for d in config.defenses:
            had = store.find_finished(CELL_KIND, cell_key(config, a, d))
            cells[(a.key, d.key)] = run_cell(config, store, a, d, workdir)
            tell("cell", f"{a.key} x {d.key}", cells[(a.key, d.key)], had is not None)
    from bastion.stealing.table import summarize

    key = spec_hash(config.model_dump(mode="json"))
    run_id = store.find_finished(RUN_KIND, key) or store.open_run(RUN_KIND, key, config.model_dump(mode="json"),
                                                                   config.seed, _env())
    store.finish_run(run_id, summarize(config, store, cells, defenses, detectors))
    return StealResult(run_id, cells)
