"""Obtain every defense of a comparison: train it (or load what an earlier run trained) and measure its costs.

Each defense becomes a *deployable module* -- the ``nn.Module`` a user would serve, inputs in the data set's
bounds, logits (plus a rejection logit for detectors) out -- written to ``NAME-HASH.module.safetensors`` in the
comparison's work folder with the recipe it is rebuilt from (``compare.deployable``: weights and recipe, never a
pickle); trained weights are also kept as ordinary safetensors checkpoints for every other bastion command.
The hash in the name covers everything the defense was built from, so a changed spec is never reused.

The build record (training seconds, forward/backward passes where counted, inference latency as a multiple
of the baseline's, measured in the same process, alternating) is what the cost columns show.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bastion.compare.config import CompareConfig, DefenseEntry, spec_hash
from bastion.compare.deployable import SUFFIX, load_built, rebuild, save_deployable
from bastion.data import load_dataset
from bastion.errors import InvalidInputError
from bastion.zoo.checkpoint import CheckpointMeta

BUILD_KIND = "compare-build"
LATENCY_REPEATS = 5


def dependencies(config: CompareConfig, entry: DefenseEntry) -> list[str]:
    """Defenses that must be built first: the baseline (latency reference), ``base`` and ``members``."""
    deps = [] if entry.method == "standard" else [config.baseline().name]
    if entry.kind == "inference":
        deps.append(entry.base or config.baseline().name)
    deps += entry.members
    return list(dict.fromkeys(d for d in deps if d != entry.name))


def build_key(config: CompareConfig, entry: DefenseEntry) -> str:
    """Content hash of everything ``entry`` is built from, its dependencies' hashes included."""
    common = [config.dataset, config.arch, config.arch_kwargs, config.seed, config.train, config.threat]
    deps = [build_key(config, config.entry(d)) for d in dependencies(config, entry)]
    measured_only = {"n": None, "eot_samples": None, "generalization": True, "certify": None}
    return spec_hash(*common, entry.model_copy(update=measured_only), deps)


def module_path(workdir: Path, config: CompareConfig, entry: DefenseEntry) -> Path:
    return workdir / f"{entry.name}-{build_key(config, entry)}{SUFFIX}"


def checkpoint_path(workdir: Path, config: CompareConfig, entry: DefenseEntry) -> Path:
    return workdir / f"{entry.name}-{build_key(config, entry)}"


def _checkpoint_recipe(out: Path, noise_sigma: float | None = None, seed: int = 0) -> dict[str, Any]:
    return {"kind": "checkpoint", "file": out.name, "noise_sigma": noise_sigma, "seed": seed}


# training ----------------------------------------------------------------------------------------------
def _train_standard(config: CompareConfig, out: Path, seed: int) -> tuple[nn.Module, dict[str, Any]]:
    from bastion.zoo.architectures import build_model
    from bastion.zoo.checkpoint import save_checkpoint
    from bastion.zoo.train import TrainConfig, accuracy, init_model, train_classifier

    data = load_dataset(config.dataset, seed=config.seed)
    model = init_model(lambda: build_model(config.arch, data.spec.shape, data.spec.num_classes, **config.arch_kwargs),
                       seed)
    budget = config.train
    tc = TrainConfig(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr, patience=budget.epochs,
                     seed=seed)
    history = train_classifier(model, data.train.take(budget.train_subset), data.val, tc)
    model.eval()
    meta = CheckpointMeta(arch=config.arch, input_shape=data.spec.shape, num_classes=data.spec.num_classes,
                          dataset=config.dataset, arch_kwargs=dict(config.arch_kwargs), seed=seed,
                          recipe={"method": "standard", "train_subset": budget.train_subset, **asdict(tc)},
                          metrics={"test_accuracy": accuracy(model, data.test), "train_seconds": history.seconds})
    save_checkpoint(model, out, meta)
    return model, {"train_seconds": history.seconds, "forward_passes": history.forward_passes,
                   "backward_passes": history.backward_passes, "recipe": _checkpoint_recipe(out)}


def _recipe_fields() -> set[str]:
    from bastion.defenses.training.recipe import Recipe

    return set(Recipe.model_fields)


def _train_adversarial(config: CompareConfig, entry: DefenseEntry, out: Path) -> tuple[nn.Module, dict[str, Any]]:
    from bastion.defenses.training.loop import adversarial_train
    from bastion.defenses.training.recipe import Recipe

    if config.threat.norm == "l1":
        raise InvalidInputError("adversarial training supports linf and l2 threats; pick one of them as `threat`.")
    recipe_keys = _recipe_fields() - {"defense", "method"}
    budget = config.train
    fields = {"defense": entry.method, "dataset": config.dataset, "arch": config.arch,
              "arch_kwargs": dict(config.arch_kwargs), "norm": config.threat.norm, "eps": config.threat.eps,
              "epochs": budget.epochs, "batch_size": budget.batch_size, "train_subset": budget.train_subset,
              "lr": budget.lr, "seed": config.seed, "test_size": 200}
    fields |= {k: v for k, v in entry.params.items() if k in recipe_keys}
    fields["method"] = {k: v for k, v in entry.params.items() if k not in recipe_keys}
    model, meta = adversarial_train(Recipe(**fields), out)
    cost = meta.metrics["cost"]
    return model, {"train_seconds": cost["train_seconds"], "forward_passes": cost["forward_passes"],
                   "backward_passes": cost["backward_passes"], "recipe": _checkpoint_recipe(out)}


def _train_certified(config: CompareConfig, entry: DefenseEntry, out: Path) -> tuple[nn.Module, dict[str, Any]]:
    from bastion.certification.train import CertTrainConfig, train_certified

    budget, p = config.train, dict(entry.params)
    method = "gaussian" if entry.method == "smoothing" else entry.method
    epochs = int(p.pop("epochs", budget.epochs))
    cfg = CertTrainConfig(method=method, epochs=epochs, batch_size=budget.batch_size,
                          lr=float(p.pop("lr", budget.lr)), train_size=budget.train_subset, seed=config.seed,
                          eps=float(p.pop("eps", config.threat.eps if method != "gaussian" else 0.0)),
                          sigma=float(p.pop("sigma", 0.25)),
                          warmup_epochs=float(p.pop("warmup_epochs", 0.1 * epochs)),
                          ramp_epochs=float(p.pop("ramp_epochs", 0.5 * epochs)))
    if p:
        raise InvalidInputError(f"defense {entry.name!r}: unknown params {sorted(p)} for {entry.method}; "
                                "allowed: epochs, lr, eps, sigma, warmup_epochs, ramp_epochs")
    result = train_certified(cfg, dataset=config.dataset, arch=config.arch, arch_kwargs=dict(config.arch_kwargs),
                             out=out)
    model: nn.Module = result.model
    recipe = _checkpoint_recipe(out)
    if entry.method == "smoothing":
        # the base classifier under the smoothing noise (no clipping, as in Cohen et al. 2019): the attacks
        # see a randomized model and use EOT; certification uses the checkpoint.
        recipe = _checkpoint_recipe(out, noise_sigma=cfg.sigma, seed=config.seed)
        model = rebuild(recipe, out.parent)
    return model, {"train_seconds": result.seconds, "recipe": recipe}


def _build_inference(config: CompareConfig, entry: DefenseEntry, workdir: Path
                     ) -> tuple[nn.Module, dict[str, Any]]:
    from bastion.defenses.inference import DEFENSES

    data = load_dataset(config.dataset, seed=config.seed)
    base_path = module_path(workdir, config, config.entry(entry.base or config.baseline().name))
    base, _ = load_built(base_path)
    params = dict(entry.params)
    spent = 0.0
    paths = [module_path(workdir, config, config.entry(m)) for m in entry.members]
    members = [load_built(p)[0] for p in paths]
    member_recipes = [{"kind": "deployable", "file": p.name} for p in paths]
    for i in range(entry.seeds):  # extra standard members: their training is part of this defense's cost
        start = time.perf_counter()
        member, record = _train_standard(config, checkpoint_path(workdir, config, entry).with_name(
            f"{entry.name}-member{i + 1}-{build_key(config, entry)}"), config.seed + i + 1)
        spent += time.perf_counter() - start
        members.append(member)
        member_recipes.append(record["recipe"])
    if members:
        params["members"] = members
    spec = DEFENSES.get(entry.method)
    part = None
    if spec.needs_data and "data" not in params:
        part = "train" if spec.kind in ("distillation", "ensemble") else "val"
        params["data"] = getattr(data, part)
    if entry.method == "dynamic-ensemble":
        params.setdefault("eps", config.threat.eps)
    start = time.perf_counter()
    module = spec.build(base, **params).eval()
    recipe = {"kind": "defense", "method": entry.method, "base": {"kind": "deployable", "file": base_path.name},
              "members": member_recipes, "params": {k: v for k, v in params.items() if k not in ("members", "data")},
              "data": part, "dataset": config.dataset, "seed": config.seed}
    return module, {"train_seconds": spent, "build_seconds": time.perf_counter() - start, "recipe": recipe}


def _latency(config: CompareConfig, module: nn.Module, baseline: nn.Module) -> dict[str, float]:
    """Median forward time of ``module`` and of the baseline on the same batch, measured alternately."""
    data = load_dataset(config.dataset, seed=config.seed)
    x = data.test.x[:config.eval.latency_points]
    from bastion.defenses.inference.base import median_latency

    own, bare = [], []
    for _ in range(3):
        bare.append(median_latency(baseline, x, LATENCY_REPEATS))
        own.append(median_latency(module, x, LATENCY_REPEATS))
    t_own, t_bare = statistics.median(own), statistics.median(bare)
    return {"latency_seconds": t_own, "baseline_latency_seconds": t_bare,
            "latency_multiple": t_own / max(t_bare, 1e-9), "latency_points": int(x.shape[0])}


def build_entry(config: CompareConfig, name: str, workdir: Path) -> dict[str, Any]:
    """Train/build defense ``name`` into ``workdir`` and return its build record (runs in a worker)."""
    torch.set_num_threads(1)
    entry = config.entry(name)
    ckpt, path = checkpoint_path(workdir, config, entry), module_path(workdir, config, entry)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if entry.method == "standard":
        module, record = _train_standard(config, ckpt, config.seed)
    elif entry.kind == "trained":
        module, record = _train_adversarial(config, entry, ckpt)
    elif entry.kind == "certified":
        module, record = _train_certified(config, entry, ckpt)
    else:
        module, record = _build_inference(config, entry, workdir)
    record["wall_seconds"] = time.perf_counter() - start
    data = load_dataset(config.dataset, seed=config.seed)
    facts = {"dataset": config.dataset, "input_shape": list(data.spec.shape), "num_classes": data.spec.num_classes}
    digest = save_deployable(module, path, record.pop("recipe"), facts)
    baseline = module if entry.method == "standard" else load_built(module_path(workdir, config,
                                                                                config.baseline()))[0]
    record |= _latency(config, module, baseline)
    if entry.method == "standard":  # the reference itself; the measured self-ratio shows the timing noise
        record["latency_self_ratio"], record["latency_multiple"] = record["latency_multiple"], 1.0
    return record | {"defense": name, "method": entry.method, "kind": entry.kind, "module": str(path),
                     "sha256": digest, "checkpoint": f"{ckpt}.safetensors" if entry.kind != "inference" else None,
                     "key": build_key(config, entry)}
