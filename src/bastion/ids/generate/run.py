"""``generate``: build the virtual network, start the services, capture, run the benign clients and the bounded
attacks, tear everything down, meter the capture into labelled flows and write them with their data card."""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bastion.errors import InvalidInputError
from bastion.ids.flows import UNLABELLED, pcap_to_flows
from bastion.ids.generate.actors import ATTACKERS, SERVER, SERVER_IP, Actor, benign_clients, label_map
from bastion.ids.generate.attacks import Step, plans
from bastion.ids.generate.card import make_card, tool_versions, write_card
from bastion.ids.generate.lab import Lab, require_privilege, require_tools
from bastion.ids.generate.services import HERE, TOOLS, start_services
from bastion.ids.generate.webapp import PASSWORD, USER

log = logging.getLogger(__name__)
Progress = Callable[[str, float, float], None]  # (phase, done, total)


def _attacker(lab: Lab, actor: Actor, steps: list[Step], delay: float, cwd: Path, logs: Path) -> None:
    time.sleep(delay)
    log = logs / f"{actor.name}.log"
    for step in steps:
        with log.open("a") as out:
            out.write(" ".join(step.argv) + "\n")
        lab.run(lab.ns(actor), ["env", "-C", str(cwd), *step.argv], timeout=step.timeout, log=log)


def run_traffic(lab: Lab, tmp: Path, seconds: float, seed: int, clients: tuple[Actor, ...], on_progress: Progress,
             intensity: float) -> None:
    services = start_services(lab, lab.ns(SERVER), tmp, seconds + 60)
    rng = np.random.default_rng(seed)
    logs = tmp / "logs"
    client = str(HERE / "client.py")
    procs = [lab.spawn(lab.ns(c), ["timeout", "-k", "5", str(int(seconds + 20)), sys.executable, client,
                                   SERVER_IP, str(seed * 1000 + i), str(seconds), str(services.client_key), USER,
                                   PASSWORD], log=logs / f"{c.name}.log") for i, c in enumerate(clients)]
    threads = []
    for actor, (name, steps) in zip(ATTACKERS, plans(intensity, seconds, seed, tmp).items(), strict=True):
        assert actor.name == name
        delay = float(rng.uniform(0, 0.3 * seconds))
        t = threading.Thread(target=_attacker, args=(lab, actor, steps, delay, tmp, logs), daemon=True)
        t.start()
        threads.append(t)
    start = time.monotonic()
    limit = seconds * 1.6 + 60  # every step has its own timeout; this is the backstop
    for _ in range(int(limit) + 1):
        elapsed = time.monotonic() - start
        if elapsed >= seconds and not any(t.is_alive() for t in threads) and all(p.poll() is not None for p in procs):
            break
        on_progress("traffic", min(elapsed, seconds), seconds)
        time.sleep(1.0)
    on_progress("traffic", seconds, seconds)


def _capture(actors: tuple[Actor, ...], pcap: Path, seed: int, minutes: float, clients: int, report: Progress,
             logs: Path) -> str:
    """Build the lab, capture its traffic into ``pcap``, tear it down; returns the run's namespace prefix."""
    tmp = Path(tempfile.mkdtemp(prefix="bastion-ids-"))
    try:
        with Lab(actors) as lab:
            report("network", 0, 1)
            dump = lab.spawn(lab.bridge_ns, ["tcpdump", "-i", "br0", "-n", "-U", "-Z", "root", "-s", "0",
                                             "-w", str(pcap), "ip"], log=tmp / "tcpdump.log")
            time.sleep(1.0)
            run_traffic(lab, tmp, minutes * 60, seed, actors[1:1 + clients], report, minutes)
            time.sleep(2.0)
            dump.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                dump.wait(timeout=10)
            return lab.prefix
    finally:
        if (tmp / "logs").is_dir():
            shutil.copytree(tmp / "logs", logs, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def generate(out_dir: str | Path, *, seed: int = 0, minutes: float = 3.0, clients: int = 6,
             command: str | None = None, on_progress: Progress | None = None) -> Path:
    """Generate ``minutes`` of labelled traffic; returns the path of ``flows.csv.gz`` in ``out_dir`` (beside it:
    ``capture.pcap``, ``card.json``, ``CARD.md``). Needs root (network namespaces) and the tools of
    ``services.TOOLS``. The services' and tools' logs are kept in ``out_dir/logs``. Flows with no actor's address
    on either end (none are expected: nothing else is on the network) are left out."""
    if not 0.1 <= minutes <= 60:
        raise InvalidInputError(f"minutes must be between 0.1 and 60, got {minutes}; e.g. --minutes 3")
    if not 1 <= clients <= 50:
        raise InvalidInputError(f"clients must be between 1 and 50, got {clients}")
    require_privilege()
    require_tools(TOOLS)
    report = on_progress or (lambda *_: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    actors = (SERVER, *benign_clients(clients), *ATTACKERS)
    prefix = _capture(actors, out / "capture.pcap", seed, minutes, clients, report, out / "logs")
    report("flows", 0, 1)
    flows = pcap_to_flows(out / "capture.pcap", label_map(actors))
    flows = flows[flows["Label"] != UNLABELLED].reset_index(drop=True)
    path = out / "flows.csv.gz"
    flows.to_csv(path, index=False)
    cmd = command or f"bastion.ids.generate.generate(out_dir, seed={seed}, minutes={minutes}, clients={clients})"
    write_card(make_card(flows, seed=seed, minutes=minutes, command=cmd, actors=actors, prefix=prefix,
                         versions=tool_versions()), out)
    report("flows", 1, 1)
    return path
