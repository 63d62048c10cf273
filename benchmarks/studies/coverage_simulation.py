"""Coverage of the run-level intervals on simulated crossed run x case designs (issue 26).

Paired case differences d[r, c] = mu + a[c] + b[r] + e[r, c]: a shared case effect a (every run
scores the same test cases), a run effect b (seed, data order) and noise e. Per setting and run
count, the share of simulated studies whose 95 % interval covers

- the test-set mean mu + mean(a) (what the t-interval on run means claims: new runs, this test set),
- the population mean mu (what the two-way bootstrap claims: new runs and new cases),

for the t-interval (df = R - 1), the two-way (pigeonhole) bootstrap and the hierarchical bootstrap
that issue 18 published (runs resampled, then cases independently within each drawn run; kept
here only to show its coverage).

    python benchmarks/studies/coverage_simulation.py [--simulations 2000] [--resamples 1000]

prints the table and writes coverage_simulation.json beside this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pu_nnunet.json_files import write_json
from pu_nnunet.evaluation.metrics.run_stats import t_interval, two_way_bootstrap_ci

# (name, cases, case-effect sd, run-effect sd, noise sd): "ct" fitted to the committed CT study
# (6 test volumes, between-run sd of the foreground difference 0.028, pooled case sd about 0.02);
# "us" to the ultrasound study (50 lesion images, between-run sd 0.006, case sd of differences 0.03)
SETTINGS = (("ct", 6, 0.010, 0.020, 0.015), ("us", 50, 0.030, 0.005, 0.030))
RUN_COUNTS = (2, 3, 5, 10)
MU = 0.0


def hierarchical_bootstrap_ci(matrix: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The interval issue 18 published (removed from run_stats): runs resampled, then the cases of
    each drawn run resampled independently (a nested design's bootstrap)."""
    rng = np.random.default_rng(seed)
    n_runs, n_cases = matrix.shape
    drawn = rng.integers(0, n_runs, size=(resamples, n_runs))
    cases = rng.integers(0, n_cases, size=(resamples, n_runs, n_cases))
    means = matrix[drawn[:, :, None], cases].mean(axis=2).mean(axis=1)
    return tuple(np.quantile(means, [0.025, 0.975]))


def simulate(setting, n_runs: int, simulations: int, resamples: int, seed: int) -> dict:
    name, n_cases, case_sd, run_sd, noise_sd = setting
    rng = np.random.default_rng(seed)
    a = rng.normal(0, case_sd, (simulations, 1, n_cases))
    b = rng.normal(0, run_sd, (simulations, n_runs, 1))
    d = MU + a + b + rng.normal(0, noise_sd, (simulations, n_runs, n_cases))
    test_set_mean = MU + a.mean(axis=(1, 2))
    low, high = t_interval(d.mean(axis=2))
    counts = {"t_test_set": ((low <= test_set_mean) & (test_set_mean <= high)).mean(),
              "t_population": ((low <= MU) & (MU <= high)).mean()}
    two_way = np.array([two_way_bootstrap_ci(d[i], resamples, seed=i) for i in range(simulations)])
    hierarchical = np.array([hierarchical_bootstrap_ci(d[i], resamples, seed=i) for i in range(simulations)])
    for label, intervals in (("two_way", two_way), ("hierarchical", hierarchical)):
        counts[f"{label}_test_set"] = ((intervals[:, 0] <= test_set_mean) & (test_set_mean <= intervals[:, 1])).mean()
        counts[f"{label}_population"] = ((intervals[:, 0] <= MU) & (MU <= intervals[:, 1])).mean()
    return {"setting": name, "runs": n_runs, "cases": n_cases, "case_sd": case_sd, "run_sd": run_sd,
            "noise_sd": noise_sd, "simulations": simulations, **{k: float(v) for k, v in counts.items()},
            "t_half_width_mean": float(((high - low) / 2).mean()),
            "two_way_half_width_mean": float(((two_way[:, 1] - two_way[:, 0]) / 2).mean()),
            "hierarchical_half_width_mean": float(((hierarchical[:, 1] - hierarchical[:, 0]) / 2).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    rows = [simulate(setting, n, args.simulations, args.resamples, seed=1000 * n + index)
            for index, setting in enumerate(SETTINGS) for n in RUN_COUNTS]
    header = ("setting", "runs", "t: test set", "t: population", "two-way: test set", "two-way: population",
              "hierarchical: test set", "hierarchical: population", "half-width t / two-way / hier.")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['setting']} | {r['runs']} | {r['t_test_set']:.3f} | {r['t_population']:.3f} | "
              f"{r['two_way_test_set']:.3f} | {r['two_way_population']:.3f} | {r['hierarchical_test_set']:.3f} | "
              f"{r['hierarchical_population']:.3f} | {r['t_half_width_mean']:.4f} / {r['two_way_half_width_mean']:.4f}"
              f" / {r['hierarchical_half_width_mean']:.4f} |")
    out = Path(__file__).with_name("coverage_simulation.json")
    write_json(out, {"simulations": args.simulations, "resamples": args.resamples, "mu": MU, "rows": rows})


if __name__ == "__main__":
    main()
