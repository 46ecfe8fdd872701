"""Benchmark: CPU cost of the synthetic patient (``signaling/cli/patient_sim.py``).

``python -m benchmarks.patient_sim [--seconds 60] [--rate 500]`` generates validated 40 ms
batches of ECG and pleth with their numerics, as fast as it can, and prints JSON: process CPU
seconds per simulated second (the fraction of one core the simulator needs in real time) for
each ECG rate asked, side by side. A real-time simulator must stay well under 5 % of a core.
"""

from __future__ import annotations

import argparse
import json
import time

from orbridge.signaling.cli.patient_sim import SyntheticPatient


def cost(seconds: float, rate_hz: float, batch_ms: float = 40.0) -> float:
    """CPU seconds per simulated second."""
    patient = SyntheticPatient(rate_hz, "normal", seed=1)
    batches = patient.batches(batch_ms)
    start = time.process_time()
    while patient.t_s < seconds:
        next(batches)
    return (time.process_time() - start) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds per rate")
    parser.add_argument("--rate", default="250,500,1000", help="ECG rates in Hz, comma-separated")
    args = parser.parse_args()
    rates = [float(r) for r in args.rate.split(",")]
    cost(2.0, rates[0])  # warm up numpy's caches before measuring
    figures = {f"{r:g} Hz": cost(args.seconds, r) for r in rates}
    base = figures[f"{rates[0]:g} Hz"]
    print(json.dumps({
        "core_fraction": {k: round(v, 5) for k, v in figures.items()},
        "ratio_to_first": {k: round(v / base, 2) if base else None for k, v in figures.items()},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
