"""The CIC flow constraints: derived for the layout, checked on data that satisfies them by construction, and a
constraint file that contradicts the data is one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.ids.flowgen import synthetic_flows

from bastion.errors import InvalidInputError
from bastion.ids.constraints import CIC_RELATIONS, cic_relations, flow_threat
from bastion.ids.features import FEATURE_NAMES


def test_every_cic_relation_holds_on_consistent_flows_and_derives_its_feature() -> None:
    rows, _ = synthetic_flows(300)
    threat = flow_threat(FEATURE_NAMES, rows, eps=0.05)
    assert len(threat.relations) == len(CIC_RELATIONS)
    x = torch.as_tensor(rows)
    assert threat.contains(x, x).all()
    assert torch.allclose(threat.complete(x), x, rtol=1e-9, atol=1e-6)  # every derived column is its definition
    assert threat.free[FEATURE_NAMES.index("Total Fwd Packets")]
    assert not threat.free[FEATURE_NAMES.index("Flow Bytes/s")]  # derived
    assert not threat.mutable[FEATURE_NAMES.index("Destination Port")]


def test_relations_are_restricted_to_present_columns() -> None:
    columns = [c for c in FEATURE_NAMES if c != "Flow Duration"]
    kept = cic_relations(columns)
    assert kept and all("Flow Duration" not in r for r in kept)
    assert len(kept) < len(CIC_RELATIONS)


def test_projected_flows_satisfy_every_constraint() -> None:
    rows, _ = synthetic_flows(200, seed=1)
    threat = flow_threat(FEATURE_NAMES, rows, eps=0.05)
    x = torch.as_tensor(rows)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype) * threat.scale * 0.03
    out = threat.project(x + noise, x)
    valid = threat.contains(out, x)
    assert valid.float().mean() > 0.5  # most random moves repair into a real flow
    assert (threat.distance(out[valid], x[valid]) <= 0.05 + 1e-9).all()
    moved = out[valid] - x[valid]
    port = FEATURE_NAMES.index("Destination Port")
    assert (moved[:, port] == 0).all() and (moved.abs().sum(1) > 0).any()


def test_a_constraint_file(tmp_path) -> None:
    rows, _ = synthetic_flows(100)
    spec = tmp_path / "c.yaml"
    spec.write_text("features:\n  Flow Duration: {immutable: true}\n  Total Fwd Packets: {weight: 0.5}\n"
                    "relations:\n  - '[Total Fwd Packets] >= [Fwd PSH Flags]'\n")
    threat = flow_threat(FEATURE_NAMES, rows, constraints=spec)
    assert not threat.mutable[FEATURE_NAMES.index("Flow Duration")]
    assert "[Total Fwd Packets] >= [Fwd PSH Flags]" in threat.relations
    spec.write_text("relations:\n  - '[Total Fwd Packets] <= 0'\n")
    with pytest.raises(InvalidInputError, match=r"contradict the data") as info:
        flow_threat(FEATURE_NAMES, rows, constraints=spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "match"), [
    ("features:\n  Nope: {immutable: true}\n", "does not have"), ("colour: red\n", "unknown key"),
    ("layout: kdd\n", "layout 'kdd'"), ("features:\n  Flow Duration: {frozen: 1}\n", "mapping with keys"),
])
def test_bad_constraint_files_are_one_line(tmp_path, text: str, match: str) -> None:
    rows, _ = synthetic_flows(20)
    spec = tmp_path / "c.yaml"
    spec.write_text(text)
    with pytest.raises(InvalidInputError, match=match) as info:
        flow_threat(FEATURE_NAMES, rows, constraints=spec)
    assert "\n" not in str(info.value)


def test_non_cic_columns_get_no_relations() -> None:
    data = np.random.default_rng(0).random((10, 3))
    threat = flow_threat(("a", "b", "c"), data)
    assert threat.relations == () and threat.free.all()


def test_a_flow_cannot_outrun_the_wire() -> None:
    """A duration squeezed to a fraction of a microsecond keeps its packets at a rate no link carries: invalid."""
    rows, _ = synthetic_flows(50, seed=2)
    threat = flow_threat(FEATURE_NAMES, rows, eps=0.05)
    x = torch.as_tensor(rows)
    many = int(torch.nonzero(x[:, FEATURE_NAMES.index("Total Fwd Packets")] > 5)[0])
    squeezed = x[many:many + 1].clone()
    squeezed[0, FEATURE_NAMES.index("Flow Duration")] = 1e-6
    squeezed = threat.complete(squeezed)
    broken = {k for k, v in threat.violations(squeezed, x[many:many + 1]).items() if bool(v[0])}
    assert "[Flow Packets/s] <= 14880952" in broken and "[Flow Bytes/s] <= 1250000000" in broken
