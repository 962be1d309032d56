"""A training step's time on a quiet machine and beside one busy job, by OpenMP wait policy.

torch's CPU kernels run on OpenMP threads (GNU libgomp in the Linux wheels), one per core by
default. At the end of each parallel region a thread that finishes first spins before it sleeps,
300,000 times by default. When a job in another session (another terminal, a background job)
keeps one core busy, one of torch's threads shares that core with it, and the other spins on its
own core waiting for it: every region then lasts about a scheduler time slice. A smaller
`GOMP_SPINCOUNT` lets the waiting thread sleep sooner; the README ("Training") advises it for runs
beside other work. It is not `fedgan`'s default: with 10,000 spins a training step was level with
libgomp's default on a quiet machine, but the in-training evaluation (many small kernels with
Python between them, each waking the sleeping threads) made a 3-epoch run with three evaluations
take 1.14 x as long (two interleaved pairs of `fedgan train` on the demo's store).

This times the demo's model (64 px, quarter widths, conditional, batch 16; `train_step`) in a fresh
process per setting, because libgomp reads its settings once, when torch loads. Each setting runs
`--repeats` times, interleaved with the others, first on a quiet machine and then beside a job that
keeps one core busy; the fastest run of each counts. It prints milliseconds a step and each
setting's time as a multiple of libgomp's default in the same condition.

    python benchmarks/thread_contention.py [--repeats 3] [--steps 20] [--threads N]

Run it on an otherwise idle machine: its "quiet" rows assume nothing else runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

#: name -> the environment a child starts with (libgomp's own default spin count is 300,000)
SETTINGS = {
    "libgomp default (300,000 spins)": {"GOMP_SPINCOUNT": "300000"},
    "GOMP_SPINCOUNT=10,000": {"GOMP_SPINCOUNT": "10000"},
    "OMP_WAIT_POLICY=PASSIVE (no spinning)": {"OMP_WAIT_POLICY": "PASSIVE"},
}

CHILD = """
import time, torch
from fedgan.config import GANConfig, TrainConfig
from fedgan.training.loop import new_state, train_step
torch.set_num_threads({threads})
model = GANConfig(resolution=64, generator_width=256, discriminator_width=32, num_classes=5)
train = TrainConfig(seed=0, batch_size=16)
state = new_state(model, train, torch.device("cpu"))
real, grades = torch.rand(16, 1, 64, 64) * 2 - 1, torch.arange(16) % 5
for _ in range(3):
    train_step(state, real, grades, train)
started = time.perf_counter()
for _ in range({steps}):
    train_step(state, real, grades, train)
print((time.perf_counter() - started) / {steps})
"""


def step_seconds(setting: dict[str, str], steps: int, threads: int) -> float:
    environment = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    environment |= setting
    result = subprocess.run(
        [sys.executable, "-c", CHILD.format(steps=steps, threads=threads)],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


#: another job on one core: one torch thread multiplying matrices
BUSY = """
import torch
torch.set_num_threads(1)
a = torch.randn(512, 512)
while True:
    a = torch.tanh(a @ a)
"""


def busy_process() -> subprocess.Popen:
    """A process that keeps one core busy, as a single-threaded job started from another terminal
    would: in a session of its own. With the scheduler's autogroups (`/proc/sys/kernel/
    sched_autogroup_enabled`, on by default in most distributions) CPU time is shared between
    sessions before it is shared between their threads; on our 2-core machine the same job in our
    own session slowed the default step about 3 x, in a session of its own about 20 x."""
    return subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each setting per condition; the fastest counts")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (after 3 warm-up steps)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads (all cores)")
    args = parser.parse_args()
    print(f"{args.threads} torch threads on {len(os.sched_getaffinity(0))} cores, demo model, batch 16")
    for condition in ("quiet", "beside a busy job in another session"):
        busy = busy_process() if condition != "quiet" else None
        try:
            time.sleep(3.0 if busy else 0.0)  # torch's import
            best = dict.fromkeys(SETTINGS, float("inf"))
            for _ in range(args.repeats):
                for name, setting in SETTINGS.items():  # interleaved: the machine's speed drifts
                    best[name] = min(best[name], step_seconds(setting, args.steps, args.threads))
        finally:
            if busy:
                busy.kill()
                busy.wait()
        default = best[next(iter(SETTINGS))]
        print(f"{condition}:")
        for name, seconds in best.items():
            print(f"    {name:40s} {seconds * 1000:7.0f} ms a step, {seconds / default:5.2f} x the default")


if __name__ == "__main__":
    main()
