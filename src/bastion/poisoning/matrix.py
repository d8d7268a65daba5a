"""Run an attack x defense poisoning matrix: poison and train once per attack, defend once per cell, on Dask.

Every finished piece is a run in the results store: each attack's poisoned set and the model trained on it are a
``poison-build`` run (its files kept in the work folder), each (attack, defense) cell a ``poison-cell`` run with
its metrics, and the matrix a ``poison`` run whose summary holds the table. A build or cell whose run is finished
(and whose files are still there) is reused, so a killed matrix resumes with nothing recomputed.

The defenses see only a :class:`~bastion.poisoning.base.DefenderView` (the received training set, the clean
validation set, the trained model, the recipe); the test set and the ground truth stay here, for the metrics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.data import load_dataset
from bastion.data.base import DatasetSpec, Split
from bastion.evaluation.sweep import Event
from bastion.poisoning.config import NONE, AttackEntry, DefenseEntry, PoisonConfig, check_names
from bastion.poisoning.cost import count_passes
from bastion.poisoning.recipe import Recipe
from bastion.poisoning.records import examples, histogram, jsonable
from bastion.store import Store
from bastion.yamlfile import spec_hash

BUILD_KIND, CELL_KIND, MATRIX_KIND = "poison-build", "poison-cell", "poison"
FORMAT = 1  # bump when the meaning of a stored build or cell changes


@dataclass(frozen=True)
class Data:
    spec: DatasetSpec
    train: Split
    val: Split
    test: Split


@dataclass
class MatrixResult:
    run_id: str
    builds: dict[str, str] = field(default_factory=dict)  # attack key -> build run id
    cells: dict[tuple[str, str], str] = field(default_factory=dict)  # (attack, defense) -> cell run id


# data, recipe, keys, files -----------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def load_data(dataset: str, seed: int, train_size: int | None, val_size: int, test_size: int | None) -> Data:
    """The matrix's data: the first ``train_size`` training points, ``val_size`` clean validation points (the
    defender's), the first ``test_size`` test points."""
    d = load_dataset(dataset, seed=seed)
    return Data(d.spec, d.train.take(train_size), d.val.take(val_size), d.test.take(test_size))


def data_of(config: PoisonConfig) -> Data:
    return load_data(config.dataset, config.seed, config.train_size, config.val_size, config.test_size)


def recipe_of(config: PoisonConfig, seed_offset: int = 0) -> Recipe:
    r = config.recipe
    return Recipe(arch=r.arch, epochs=r.epochs, batch_size=r.batch_size, lr=r.lr, seed=config.seed + seed_offset,
                  arch_kwargs=dict(r.arch_kwargs))


def _base(config: PoisonConfig) -> dict[str, Any]:
    return {"format": FORMAT, "dataset": config.dataset, "train_size": config.train_size,
            "val_size": config.val_size, "test_size": config.test_size, "seed": config.seed,
            "recipe": config.recipe.model_dump(mode="json")}


def resolved(config: PoisonConfig, entry: AttackEntry) -> dict[str, Any]:
    """An attack entry with the matrix's rate and target filled in."""
    return {"name": entry.name, "params": entry.params, "rate": entry.rate or config.rate,
            "target": config.target if entry.target is None else entry.target}


def build_key(config: PoisonConfig, entry: AttackEntry) -> str:
    a = resolved(config, entry) if entry.name != NONE else {"name": NONE}
    return spec_hash(_base(config), a)


def cell_key(config: PoisonConfig, attack: AttackEntry, defense: DefenseEntry) -> str:
    return spec_hash(build_key(config, attack), defense.name, defense.params)


def surrogate_path(config: PoisonConfig, workdir: Path) -> Path:
    return workdir / f"surrogate-{spec_hash(_base(config))}"


def build_dir(config: PoisonConfig, entry: AttackEntry, workdir: Path) -> Path:
    return workdir / f"{_slug(entry.name)}-{build_key(config, entry)}"


def _defended_path(config: PoisonConfig, attack: AttackEntry, defense: DefenseEntry, workdir: Path) -> str | None:
    """Where a cell's defended model is saved (an ordinary bastion checkpoint); None for the undefended cell."""
    if defense.name == NONE:
        return None
    key = cell_key(config, attack, defense)
    return str(build_dir(config, attack, workdir) / f"defended-{_slug(defense.name)}-{key}")


def _clean_folder(config: PoisonConfig, workdir: Path) -> str | None:
    """The build folder of the matrix's clean training set (attack ``none``), if it has one."""
    clean = next((a for a in config.attacks if a.name == NONE), None)
    return None if clean is None else str(build_dir(config, clean, workdir))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def save_model(model: nn.Module, path: Path, config: PoisonConfig, data: Data, recipe: dict[str, Any]) -> Path:
    """An ordinary bastion checkpoint (safetensors + metadata): `bastion evaluate --model PATH` runs on it."""
    from bastion.zoo.checkpoint import CheckpointMeta, save_checkpoint

    r = config.recipe
    meta = CheckpointMeta(arch=r.arch, input_shape=data.spec.shape, num_classes=data.spec.num_classes,
                          dataset=config.dataset, arch_kwargs=dict(r.arch_kwargs), recipe=recipe, seed=config.seed)
    return save_checkpoint(model, path, meta)


def load_model(path: Path) -> nn.Module:
    from bastion.zoo.checkpoint import load_checkpoint

    return load_checkpoint(path)[0].eval()


# workers -------------------------------------------------------------------------------------------------------
def surrogate_job(payload: dict[str, Any]) -> dict[str, Any]:
    """The attacker's own clean model (another seed than the victim's), trained once per matrix."""
    config = PoisonConfig.model_validate(payload["config"])
    data, path = data_of(config), Path(payload["path"])
    start = time.perf_counter()
    model = recipe_of(config, seed_offset=1).fit(data.train, data.val, data.spec)
    save_model(model, path, config, data, {"method": "standard", "role": "attacker surrogate"})
    return {"seconds": time.perf_counter() - start}


def build_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Poison the training set with one attack and train the victim on it; files go to the build folder."""
    torch.set_num_threads(payload.get("threads", 1))
    config = PoisonConfig.model_validate(payload["config"])
    entry = config.attack(payload["attack"])
    data, folder = data_of(config), Path(payload["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    cpu, wall = time.process_time(), time.perf_counter()
    with count_passes() as attack_passes:
        poisoned = _poison(config, entry, data, payload.get("surrogate"))
    attack_cpu, attack_wall = time.process_time() - cpu, time.perf_counter() - wall
    attacked = poisoned.attack_test(data.test)
    cpu, wall = time.process_time(), time.perf_counter()
    with count_passes() as train_passes:
        model = recipe_of(config).fit(poisoned.train, data.val, data.spec)
    train_cpu, train_wall = time.process_time() - cpu, time.perf_counter() - wall
    tensors = {"x": poisoned.train.x.contiguous(), "y": poisoned.train.y.contiguous(),
               "poisoned": poisoned.poisoned.to(torch.uint8)}
    if attacked is not None:
        tensors |= {"attack_x": attacked.x.contiguous(), "attack_y": attacked.y.contiguous()}
    save_file(tensors, str(folder / "poisoned.safetensors"))
    save_model(model, folder / "model", config, data, {"method": "standard", "poisoning": resolved(config, entry)
                                                       if entry.name != NONE else None})
    record = {"attack": entry.key, "name": entry.name, "kind": _kind(entry.name),
              "n_train": len(poisoned.train), "n_poisoned": int(poisoned.poisoned.sum()),
              "n_attack_test": None if attacked is None else len(attacked),
              "target": poisoned.target, "source": poisoned.source,
              "attack_cpu_seconds": attack_cpu, "attack_seconds": attack_wall,
              "train_cpu_seconds": train_cpu, "train_seconds": train_wall,
              "attack_passes": attack_passes.as_dict(), "train_passes": train_passes.as_dict(),
              "info": jsonable(poisoned.info), "examples": examples(poisoned, data.train, attacked)}
    (folder / "build.json").write_text(json.dumps(record))
    return record


def _kind(name: str) -> str:
    from bastion.poisoning import POISON_ATTACKS

    return "clean" if name == NONE else POISON_ATTACKS.get(name).kind


def _poison(config: PoisonConfig, entry: AttackEntry, data: Data, surrogate: str | None) -> Any:
    from bastion.poisoning import POISON_ATTACKS, AttackerView, PoisonedSet
    from bastion.poisoning.base import check_params

    if entry.name == NONE:
        return PoisonedSet(data.train, torch.zeros(len(data.train), dtype=torch.bool))
    r = resolved(config, entry)
    spec = POISON_ATTACKS.get(entry.name)
    params = check_params("poisoning attack", entry.name, entry.params, spec.defaults)
    model_cache: list[nn.Module] = []

    def get_surrogate() -> nn.Module:
        if not model_cache:
            if surrogate is None:
                raise RuntimeError("this attack needs the attacker's surrogate model, which the matrix did not build")
            model_cache.append(load_model(Path(surrogate)))
        return model_cache[0]

    view = AttackerView(data.train, data.test, data.spec, r["rate"], r["target"],
                        torch.Generator().manual_seed(config.seed), get_surrogate)
    return spec.fn(view, **params)


def cell_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one defense on one attack's build and measure it."""
    from bastion.poisoning import POISON_DEFENSES, DefenderView, DefenseResult
    from bastion.poisoning.base import check_params
    from bastion.poisoning.metrics import accuracy, attack_success_rate, detection, roc_points

    torch.set_num_threads(payload.get("threads", 1))
    config = PoisonConfig.model_validate(payload["config"])
    defense = config.defense(payload["defense"])
    data, folder = data_of(config), Path(payload["folder"])
    t = load_file(str(folder / "poisoned.safetensors"))
    received, truth = Split(t["x"], t["y"]), t["poisoned"].bool()
    attacked = Split(t["attack_x"], t["attack_y"]) if "attack_x" in t else None
    model = load_model(folder / "model")
    recipe = recipe_of(config)
    cpu, wall = time.process_time(), time.perf_counter()
    with count_passes() as passes:
        if defense.name == NONE:
            result = DefenseResult(model=model)
        else:
            spec = POISON_DEFENSES.get(defense.name)
            params = check_params("poisoning defense", defense.name, defense.params, spec.defaults)
            view = DefenderView(received, data.val, data.spec, None if spec.stage == "train" else model,
                                recipe.fitter(data.val, data.spec), torch.Generator().manual_seed(config.seed + 7))
            result = spec.fn(view, **params)
    defense_cpu, defense_wall = time.process_time() - cpu, time.perf_counter() - wall
    metrics: dict[str, Any] = {
        "clean_accuracy": accuracy(result.model, data.test, result.reject),
        "attack_success_rate": attack_success_rate(result.model, attacked, result.reject),
        "defense_cpu_seconds": defense_cpu, "defense_seconds": defense_wall, "defense_passes": passes.as_dict(),
        "stage": "none" if defense.name == NONE else POISON_DEFENSES.get(defense.name).stage,
        "info": jsonable(result.info),
    }
    if result.reject is not None:
        metrics["false_rejection_rate"] = float(result.reject(data.test.x).float().mean())
        if attacked is not None:
            metrics["attack_rejection_rate"] = float(result.reject(attacked.x).float().mean())
    if result.scores is not None or result.flagged is not None:
        metrics |= {"detection": detection(result.scores, result.flagged, truth),
                    "n_flagged": None if result.flagged is None else int(result.flagged.sum())}
        if result.scores is not None:
            metrics["roc"] = roc_points(result.scores, truth)
            metrics["histogram"] = histogram(result.scores, truth)
    if defense.name == NONE and attacked is not None and payload.get("clean_folder"):
        metrics["clean_model_attack_success_rate"] = attack_success_rate(load_model(Path(payload["clean_folder"]) /
                                                                                    "model"), attacked)
    if payload.get("model_path"):
        save_model(result.model, Path(payload["model_path"]), config, data,
                   {"method": "standard", "poisoning_defense": defense.model_dump(mode="json")})
    return metrics


# driver ----------------------------------------------------------------------------------------------------------
def run_matrix(config: PoisonConfig, store: Store, workdir: Path, *, scheduler: str | None = None, workers: int = 2,
               on_event: Callable[[Event], None] | None = None) -> MatrixResult:
    """Every build and cell of ``config`` not yet finished in ``store``, then the stored matrix."""
    from bastion.evaluation.sweep import LazyClient, dask_client
    from bastion.poisoning.table import summarize

    data = data_of(config)
    check_names(config, data.spec.num_classes)
    workdir = Path(workdir) / "builds"  # content-addressed: matrices that share an attack build share its folder
    workdir.mkdir(parents=True, exist_ok=True)
    result = MatrixResult("")
    threads = 1 if scheduler != "sync" else torch.get_num_threads()
    with LazyClient(scheduler, workers, dask_client) as client:
        surrogate = _surrogate(config, workdir, client, on_event)
        _builds(config, store, workdir, client, result, surrogate, threads, on_event)
        _cells(config, store, workdir, client, result, threads, on_event)
    key = spec_hash(config, sorted(result.builds.items()), sorted(f"{a}|{d}|{r}" for (a, d), r in
                                                                  result.cells.items()))
    run_id = store.find_finished(MATRIX_KIND, key)
    if run_id is None:
        run_id = store.create_run(MATRIX_KIND, key, config.model_dump(mode="json"), config.seed, _env())
        store.finish_run(run_id, summarize(config, store, result))
    result.run_id = run_id
    return result


def _env() -> dict[str, Any]:
    from bastion.evaluation.job import environment

    return environment()


def _needs_surrogate(config: PoisonConfig) -> bool:
    return any(a.name != NONE and _kind(a.name) == "clean-label" for a in config.attacks)


def _surrogate(config: PoisonConfig, workdir: Path, client: Any,
               on_event: Callable[[Event], None] | None) -> str | None:
    from bastion.evaluation.sweep import execute

    if not _needs_surrogate(config):
        return None
    path = surrogate_path(config, workdir)
    if not path.with_suffix(".safetensors").exists():
        payload = {"config": config.model_dump(mode="json"), "path": str(path)}
        for _ in execute(surrogate_job, [payload], client.get()):
            pass
    if on_event:
        on_event(Event("surrogate", "attacker's surrogate", "", False, 1, 1))
    return str(path)


def _builds(config: PoisonConfig, store: Store, workdir: Path, client: Any, result: MatrixResult,
            surrogate: str | None, threads: int, on_event: Callable[[Event], None] | None) -> None:
    from bastion.evaluation.sweep import execute

    total, done, todo = len(config.attacks), 0, []
    for entry in config.attacks:
        finished = store.find_finished(BUILD_KIND, build_key(config, entry))
        if finished and (build_dir(config, entry, workdir) / "poisoned.safetensors").exists():
            result.builds[entry.key] = finished
            done += 1
            if on_event:
                on_event(Event("build", entry.key, finished, True, done, total))
        else:
            todo.append(entry)
    payloads = [{"config": config.model_dump(mode="json"), "attack": e.key, "surrogate": surrogate,
                 "folder": str(build_dir(config, e, workdir)), "threads": threads} for e in todo]
    for payload, record in execute(build_job, payloads, client.get() if payloads else None):
        entry = config.attack(payload["attack"])
        run_id = store.create_run(BUILD_KIND, build_key(config, entry), {"attack": resolved(config, entry),
                                  "matrix": config.name, "folder": payload["folder"]}, config.seed, _env())
        store.finish_run(run_id, record)
        result.builds[entry.key] = run_id
        done += 1
        if on_event:
            on_event(Event("build", entry.key, run_id, False, done, total))


def _cells(config: PoisonConfig, store: Store, workdir: Path, client: Any, result: MatrixResult, threads: int,
           on_event: Callable[[Event], None] | None) -> None:
    from bastion.evaluation.sweep import execute

    pairs = [(a, d) for a in config.attacks for d in config.defenses]
    done, todo = 0, []
    for a, d in pairs:
        finished = store.find_finished(CELL_KIND, cell_key(config, a, d))
        if finished:
            result.cells[(a.key, d.key)] = finished
            done += 1
            if on_event:
                on_event(Event("cell", f"{a.key} x {d.key}", finished, True, done, len(pairs)))
        else:
            todo.append((a, d))
    payloads = [{"config": config.model_dump(mode="json"), "attack": a.key, "defense": d.key, "threads": threads,
                 "folder": str(build_dir(config, a, workdir)), "model_path": _defended_path(config, a, d, workdir),
                 "clean_folder": _clean_folder(config, workdir)} for a, d in todo]
    for payload, metrics in execute(cell_job, payloads, client.get() if payloads else None):
        a, d = config.attack(payload["attack"]), config.defense(payload["defense"])
        run_id = store.create_run(CELL_KIND, cell_key(config, a, d), {"attack": resolved(config, a) if a.name != NONE
                                  else {"name": NONE}, "defense": d.model_dump(mode="json"), "matrix": config.name},
                                  config.seed, _env())
        rows = [(name, 0, metrics[name]) for name in ("clean_accuracy", "attack_success_rate", "defense_cpu_seconds")
                if metrics[name] is not None]
        rows += [(f"detection_{k}", 0, v) for k, v in (metrics.get("detection") or {}).items() if v is not None]
        store.record_metrics(run_id, rows)
        store.finish_run(run_id, metrics)
        result.cells[(a.key, d.key)] = run_id
        done += 1
        if on_event:
            on_event(Event("cell", f"{a.key} x {d.key}", run_id, False, done, len(pairs)))
