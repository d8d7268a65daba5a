"""Data-parallel launch: ``torchrun`` processes, gloo on CPU, nccl on GPU.

``bastion adv-train ... --nproc 2`` re-runs itself under ``python -m torch.distributed.run`` with
``--nproc-per-node 2`` on 127.0.0.1; across machines pass ``--nnodes N --rdzv-endpoint HOST:PORT`` on every
node (c10d rendezvous). Launched directly, ``torchrun --nproc-per-node 2 -m bastion adv-train ...`` is the
same. Each process joins the group from torchrun's environment (``init_from_env``); the training loop sums
gradients over the group itself (``base.sync_gradients``), which is what ``DistributedDataParallel`` does
for a plain forward/backward but also covers the attack's extra passes and AWP's second backward.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist

MASTER_ADDR = "127.0.0.1"
MASTER_PORT = 29511


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env() -> tuple[int, int]:
    """Join the process group that torchrun describes in the environment; (rank, world) = (0, 1) without it."""
    if under_torchrun() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def torchrun_command(nproc: int, args: Sequence[str], *, nnodes: int = 1, rdzv_endpoint: str | None = None,
                     master_addr: str = MASTER_ADDR, master_port: int = MASTER_PORT) -> list[str]:
    """The ``python -m torch.distributed.run`` command that runs ``python -m bastion ARGS`` on ``nproc`` ranks."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv_endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-id=bastion-adv-train"]
    else:
        cmd += [f"--master-addr={master_addr}", f"--master-port={master_port}"]
    return [*cmd, "-m", "bastion", *args]


def launch(nproc: int, args: Sequence[str], **kwargs: object) -> int:
    """Run ``bastion ARGS`` under torchrun and return its exit code."""
    return subprocess.call(torchrun_command(nproc, args, **kwargs))  # type: ignore[arg-type]


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
