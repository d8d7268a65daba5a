"""What each output defense costs honest users, and how soon each detector flags a JBDA thief.

    PYTHONPATH=src /work/main/.venv/bin/python bench/steal_defense_cost.py [--n 1000] [--rounds 4]

Defenses (defaults, built with the MNIST validation split as the defender's data) wrap the shipped ``mnist-cnn``;
honest accuracy is the defended model's top-1 accuracy on the first ``n`` MNIST test images next to the bare
victim's, with the seconds the defense took to answer them. Detectors (defaults) see a JBDA stream (100 MNIST
training images as seeds, ``rounds`` doublings, lambda 0.1; tests/stealing/streams.py) and 5,000 MNIST test images
in order; the script prints the queries to the first flag of each (None: never). Single-threaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.stealing.streams import jbda_stream

from bastion.data import load_dataset
from bastion.stealing import DETECTORS, OUTPUT_DEFENSES, DefenseContext, VictimSpec, load_algorithms
from bastion.stealing.metrics import agreement, first_flag, predict
from bastion.zoo import load_model


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    torch.set_num_threads(1)
    load_algorithms()
    victim = load_model("mnist-cnn")[0].eval()
    mnist = load_dataset("mnist")
    val, test = mnist.val.take(1000), mnist.test
    x, y = test.x[:args.n], test.y[:args.n]
    spec = VictimSpec((1, 28, 28), 10)
    ctx = lambda: DefenseContext(val.x, val.y, spec, torch.Generator().manual_seed(0), victim=victim)  # noqa: E731
    rows = {"victim": {"accuracy": agreement(predict(victim, x), y)}}
    for name in OUTPUT_DEFENSES.names():
        start = time.perf_counter()
        defended = OUTPUT_DEFENSES.get(name).fn(victim, ctx())
        built = time.perf_counter()
        labels = predict(defended, x, batch_size=len(x))
        rows[name] = {"accuracy": agreement(labels, y), "build_s": round(built - start, 2),
                      "answer_s": round(time.perf_counter() - built, 2)}
    streams = {"jbda": jbda_stream(victim, mnist.train.x[:100], rounds=args.rounds), "natural": test.x[:5000]}
    for name in DETECTORS.names():
        rows[f"detector:{name}"] = {k: first_flag(DETECTORS.get(name).fn(ctx()), s) for k, s in streams.items()}
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
