"""Imports only flow down the layers (docs/ARCHITECTURE.md, "Layers"). Every ``import`` of a bastion module, at
the top of a file or inside a function, must name a module of the same or a lower layer. A new module is placed
by the first rule that matches its dotted name, so a new package needs a rule here before its tests pass."""

from __future__ import annotations

import ast
from pathlib import Path

import bastion

SRC = Path(bastion.__file__).parent

# (layer, module prefixes), lowest first; the most specific (longest) matching prefix decides.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("bastion.errors", "bastion.registry", "bastion.progress", "bastion.oracle", "bastion.batch",
              "bastion.yamlfile", "bastion.tables")),
    ("threats", ("bastion.threats", "bastion.threat", "bastion.validate")),
    ("data", ("bastion.data", "bastion.ids.features", "bastion.ids.flows", "bastion.ids.generate",
              "bastion.ids.loaders", "bastion.ids.formats", "bastion.ids.snapshot")),
    ("models", ("bastion.zoo", "bastion.ids.models")),
    # the runner is the attacks' harness (run one attack, count, re-check); training-time checks use it too
    ("algorithms", ("bastion.attacks", "bastion.blackbox.target", "bastion.blackbox.decision",
                    "bastion.blackbox.zeroth", "bastion.blackbox.metrics", "bastion.evaluation.runner",
                    "bastion.evaluation.config", "bastion.certification.ibp", "bastion.certification.crown",
                    "bastion.certification.lipschitz", "bastion.certification._layers",
                    "bastion.certification.smoothing", "bastion.certification.config", "bastion.defenses",
                    "bastion.poisoning", "bastion.stealing", "bastion.ids")),
    ("transfer", ("bastion.blackbox",)),
    ("evaluation", ("bastion.evaluation.setup", "bastion.evaluation.memory", "bastion.evaluation.suite",
                    "bastion.evaluation.diagnostics",
                    "bastion.evaluation.adaptive",
                    "bastion.evaluation.outcome", "bastion.certification.train")),
    ("store", ("bastion.store", "bastion.evaluation.store", "bastion.evaluation.claims")),
    ("runs", ("bastion.evaluation", "bastion.evaluation.job", "bastion.evaluation.summary", "bastion.evaluation.report",
              "bastion.evaluation.plots", "bastion.certification", "bastion.compare.deployable",
              "bastion.poisoning.table", "bastion.stealing.table", "bastion.ids.job",
              "bastion.ids.report")),
    ("api", ("bastion.api", "bastion.report")),
    ("jobs", ("bastion.evaluation.sweep", "bastion.compare", "bastion.poisoning.matrix", "bastion.poisoning.api",
              "bastion.stealing.run", "bastion.stealing.api", "bastion.ids.api", "bastion.serve")),
    ("cli", ("bastion.cli", "bastion.__main__")),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
# ``bastion`` itself: importing it (for __version__) is allowed from anywhere; its own lazy re-export of the API
# (``bastion.evaluate`` etc.) is the facade, above everything.
FACADE = "bastion"


def layer_of(module: str) -> str:
    if module == FACADE:
        return "core"
    matches = [(len(p), name) for name, prefixes in LAYERS for p in prefixes
               if module == p or module.startswith(p + ".")]
    if not matches:
        raise AssertionError(f"{module} matches no layer rule in tests/test_layers.py; add one")
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every bastion module ``path`` imports, with ``from X import Y`` counted as X.Y when Y is a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bastion"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bastion":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (SRC.parent / Path(*sub.split("."))).is_dir()
                found.add(sub if is_module else node.module)
    return found


def test_every_module_has_a_layer() -> None:
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path))


def test_imports_only_flow_down() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        source = module_name(path)
        if source == FACADE:
            continue
        for target in sorted(imports_of(path)):
            if RANK[layer_of(target)] > RANK[layer_of(source)]:
                upward.append(f"{source} ({layer_of(source)}) imports {target} ({layer_of(target)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an attack importing the runs layer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bastion.evaluation.job import run\n")
    targets = imports_of(bad)
    assert "bastion.evaluation.job" in targets
    assert RANK[layer_of("bastion.evaluation.job")] > RANK[layer_of("bastion.attacks.pgd")]
