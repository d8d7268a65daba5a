"""Two gloo ranks on 127.0.0.1 (spawned here) keep identical replicas and match one process on the same global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from adv_helpers import EPS, toy, toy_model

from bastion.defenses.training import Recipe, train_epochs

# TRADES is left out: its attack starts 0.001 from x where the KL gradient is ~1e-9 and its sign depends on
# the floating-point summation order of a 64-row versus a 32-row batch; the update is the same, the numbers not.
# ATTA runs two epochs so that the second starts from perturbations the ranks stored and shared in the first.
DEFENSES = {"pgd-at": ("pgd-at", {"steps": 3}, 1), "awp": ("awp", {"steps": 3}, 1),
            "atta": ("fast-at", {"guard": "none", "init": "prior", "alpha_factor": 0.5}, 2)}


def _recipe(name: str) -> Recipe:
    # 300 points in batches of 64: the last global batch (44) is split 22/22, the others 32/32.
    defense, method, epochs = DEFENSES[name]
    return Recipe(defense=defense, dataset="toy", eps=EPS, epochs=epochs, batch_size=64, lr=3e-2, val_size=64,
                  check_size=64, val_steps=3, method=method)


def _train(defense: str) -> dict[str, torch.Tensor]:
    """The selected weights and, for ATTA, the stored perturbations (every rank must hold all of them)."""
    model, run = train_epochs(toy_model(), toy(300, 0), toy(64, 1), _recipe(defense))
    memory = {} if run.memory is None or run.memory.delta is None else {"memory.delta": run.memory.delta.float()}
    return model.state_dict() | memory


def _worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.save({d: _train(d) for d in DEFENSES}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_match_single_process(tmp_path: Path) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for defense in DEFENSES:
        single = _train(defense)
        for key, value in single.items():
            assert torch.equal(r0[defense][key], r1[defense][key]), f"{defense}: replicas differ in {key}"
            torch.testing.assert_close(r0[defense][key], value, rtol=1e-4, atol=1e-5,
                                       msg=f"{defense}: 2 ranks differ from 1 process in {key}")
        initial = toy_model().state_dict()
        assert any(not torch.equal(v, initial[k]) for k, v in single.items() if k in initial)
    assert "memory.delta" in r0["atta"] and bool(r0["atta"]["memory.delta"].abs().sum(1).gt(0).all())
