"""Training on a CPU that other jobs share: wall and CPU time against the quiet machine.

PyTorch's OpenMP threads (GNU libgomp here) spin while they wait for each other at the end of
every parallel region. On a quiet machine that saves a little latency; when other jobs hold some
of the cores, a spinning thread burns the time slice its partner needs, so each step costs many
times the CPU and the wall time grows far beyond the share of cores lost. ``OMP_WAIT_POLICY=PASSIVE``
makes waiting threads sleep; pu-nnunet sets it for the processes it starts
(:func:`pu_nnunet.cpu_threads.passive_wait_environment`).

The workload is nnU-Net's training step (bench_network.py: forward, Dice+CE loss with deep
supervision, backward, clip, SGD) of the 2d CPU-plans network, run in a fresh process per
configuration; the competing load is ``--busy`` busy-loop processes. Configurations:

    quiet, default waits | quiet, passive waits | busy, default waits | busy, passive waits

    python benchmarks/bench_busy_machine.py                  # 2 busy loops on a 2-core machine
    python benchmarks/bench_busy_machine.py --steps 30 --busy 1

Run it on an otherwise quiet machine (the "quiet" rows must be quiet): it prints the load
average at start and end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "busy_machine.json"
WAIT_POLICY = "OMP_WAIT_POLICY"


def _busy_loop() -> None:  # a competing job that keeps one core busy
    while True:
        pass


def workload(steps: int, plans: str) -> None:
    """In a child process: ``steps`` training steps after two warm-up steps; prints wall seconds."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from bench_network import PLANS, TRAINERS, INITIAL_LR, MOMENTUM, WEIGHT_DECAY, _targets, build, nnunet_loss, \
        planner_2d_plans, training_step

    spec = PLANS[plans]
    torch.manual_seed(0)
    network = build(TRAINERS["pure"], planner_2d_plans(plans, spec), spec, True).train()
    optimizer = torch.optim.SGD(network.parameters(), INITIAL_LR, weight_decay=WEIGHT_DECAY, momentum=MOMENTUM,
                                nesterov=True)
    loss_fn = nnunet_loss(spec)
    data = torch.randn(spec["cpu_train_batch"], spec["channels"], *spec["patch"])
    targets = _targets(spec, spec["cpu_train_batch"], torch.device("cpu"))
    for _ in range(2):
        training_step(network, optimizer, loss_fn, data, targets, None)
    start = time.perf_counter()
    for _ in range(steps):
        training_step(network, optimizer, loss_fn, data, targets, None)
    print(json.dumps({"wall_s": time.perf_counter() - start, "threads": torch.get_num_threads()}))


def run_config(steps: int, plans: str, passive: bool, busy: int) -> dict:
    env = dict(os.environ)
    env.pop(WAIT_POLICY, None)
    if passive:
        env[WAIT_POLICY] = "PASSIVE"
    loops = [multiprocessing.Process(target=_busy_loop, daemon=True) for _ in range(busy)]
    for loop in loops:
        loop.start()
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps), "--plans", plans],
                              env=env, stdout=subprocess.PIPE, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        for loop in loops:
            loop.terminate()
            loop.join()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # CPU time of the whole child process (start-up included), so compare it between rows only
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"busy_processes": busy, "wait_policy": "PASSIVE" if passive else "default", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--plans", default="ct2d")
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="competing busy-loop processes")
    parser.add_argument("--output", default=str(RESULTS_FILE))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workload(args.steps, args.plans)
        return
    load_start = os.getloadavg()
    rows = [run_config(args.steps, args.plans, passive, busy)
            for busy in (0, args.busy) for passive in (False, True)]
    quiet = {r["wait_policy"]: r["wall_s"] for r in rows if r["busy_processes"] == 0}
    print(f"load average at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; "
          f"{args.steps} steps of {args.plans}")
    print("| competing busy loops | waits | threads | wall s | CPU s (process) | wall / quiet default |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['busy_processes']} | {r['wait_policy']} | {r['threads']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['wall_s'] / quiet['default']:.2f} |")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    from pu_nnunet.evaluation.jsonio import write_json

    write_json(args.output, {"load_average_start": load_start, "load_average_end": os.getloadavg(),
                             "cores": os.cpu_count(), "steps": args.steps, "plans": args.plans, "rows": rows})


if __name__ == "__main__":
    main()
