"""The synthetic patient: ECG morphology, rhythm, pleth, numerics, scenarios, determinism, cost.

Time is simulated as fast as the CPU goes: nothing here waits for the wall clock.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from orbridge.rooms.vitals.alarms import AlarmEngine
from orbridge.rooms.vitals.model import Numeric
from orbridge.signaling.cli.patient_sim import PLETH_RATE_HZ, SCENARIOS, SyntheticPatient
from orbridge.signaling.cli.vitals import SCENARIO_NAMES

RATE = 500.0


def record(patient: SyntheticPatient, seconds: float, batch_ms: float = 40.0) -> dict:
    """Run the batch generator for `seconds` and gather what a receiver would see."""
    waves: dict[str, list] = defaultdict(list)
    numerics: list[Numeric] = []
    for batch in patient.batches(batch_ms):
        for w in batch.waveforms:
            waves[w.kind].append(w)
        numerics.extend(batch.numerics)
        if batch.t_s >= seconds - 1e-9:
            break
    ecg = np.concatenate([w.samples for w in waves["ecg_ii"]])
    pleth = np.concatenate([w.samples for w in waves["pleth"]])
    return {"waves": waves, "ecg": ecg, "pleth": pleth, "numerics": numerics}


def peaks(signal: np.ndarray, rate: float, threshold: float, refractory_s: float) -> np.ndarray:
    """Sample indices of local maxima above `threshold`, at most one per refractory period."""
    above = np.flatnonzero(
        (signal[1:-1] > threshold)
        & (signal[1:-1] >= signal[:-2])
        & (signal[1:-1] > signal[2:])
    ) + 1  # fmt: skip
    found: list[int] = []
    for i in above:
        if found and i - found[-1] < refractory_s * rate:
            if signal[i] > signal[found[-1]]:
                found[-1] = int(i)
            continue
        found.append(int(i))
    return np.array(found)


@pytest.fixture(scope="module")
def normal() -> dict:
    patient = SyntheticPatient(RATE, "normal", seed=11, start_ms=1_795_000_000_000)
    rec = record(patient, 60.0)
    rec["patient"] = patient
    rec["r_peaks"] = peaks(rec["ecg"], RATE, 0.6, 0.25) / RATE  # seconds
    return rec


def test_r_peaks_are_where_the_beats_are(normal: dict) -> None:
    # r_times keeps the last 64 beats scheduled (some lie just beyond the 60 s recorded)
    truth = np.array([r for r in normal["patient"].r_times if 0.02 < r < 60.0 - 0.02])
    detected = normal["r_peaks"]
    assert len(detected) >= len(truth) > 50
    assert np.max(np.abs(detected[-len(truth) :] - truth)) < 0.006  # within 3 samples
    assert 60 / np.mean(np.diff(detected)) == pytest.approx(72, abs=8)


def test_hr_numeric_matches_the_r_peaks(normal: dict) -> None:
    r = normal["r_peaks"]
    start = normal["patient"].start_ms
    checked = 0
    for n in normal["numerics"]:
        if n.kind != "hr":
            continue
        t = (n.time_ms - start) / 1000
        last = r[r <= t][-9:]
        if len(last) < 9:
            continue
        from_peaks = 60.0 / np.mean(np.diff(last))
        assert n.value == pytest.approx(from_peaks, rel=0.05)
        checked += 1
    assert checked >= 50
    assert 60 <= np.median([n.value for n in normal["numerics"] if n.kind == "hr"]) <= 85


def test_qrs_is_about_a_millivolt(normal: dict) -> None:
    ecg = normal["ecg"]
    idx = (normal["r_peaks"] * RATE).astype(int)
    baseline = np.median(ecg)  # the isoelectric line dominates the trace
    r_heights = ecg[idx] - baseline
    assert 0.8 < np.median(r_heights) < 1.4
    # The S wave dips below the baseline just after each R.
    s_depth = [ecg[i : i + int(0.06 * RATE)].min() - baseline for i in idx[:-1]]
    assert -0.5 < np.median(s_depth) < -0.1
    # Noise and wander stay small: the trace between T and P (mid-diastole) is near zero.
    assert ecg.min() > -10 and ecg.max() < 10 and np.std(np.diff(ecg)) < 0.05


def test_heart_rate_varies_like_a_real_one(normal: dict) -> None:
    rr = np.diff(normal["r_peaks"]) * 1000  # ms
    sdnn, rmssd = np.std(rr), np.sqrt(np.mean(np.diff(rr) ** 2))
    assert 15 < sdnn < 120, sdnn  # healthy adult at rest: tens of ms
    assert 5 < rmssd < 80, rmssd
    # Respiratory sinus arrhythmia: RR oscillates at the breathing rate (~14/min, 0.23 Hz).
    t = normal["r_peaks"][1:]
    grid = np.arange(t[0], t[-1], 0.25)
    series = np.interp(grid, t, rr) - np.mean(rr)
    spectrum = np.abs(np.fft.rfft(series * np.hanning(len(series))))
    freqs = np.fft.rfftfreq(len(series), 0.25)
    hf = spectrum[(freqs > 0.15) & (freqs < 0.4)].max()
    assert hf > 2 * np.median(spectrum[freqs > 0.5])


def test_pleth_pulses_follow_the_r_peaks(normal: dict) -> None:
    pleth = normal["pleth"]
    found = peaks(pleth, PLETH_RATE_HZ, 0.6 * pleth.max(), 0.3) / PLETH_RATE_HZ
    r = normal["r_peaks"]
    assert abs(len(found) - len(r)) <= 1
    delays = [p - r[r < p][-1] for p in found if (r < p).any()]
    assert min(delays) > 0.25 and max(delays) < 0.55  # transit time + upstroke
    # A dicrotic notch: a local minimum followed by a rise within each pulse's decline.
    p0 = int(found[5] * PLETH_RATE_HZ)
    decline = pleth[p0 : p0 + int(0.45 * PLETH_RATE_HZ)]
    rises = np.flatnonzero(np.diff(decline) > 0)
    assert len(rises) > 0, "no dicrotic notch"


def test_batches_have_consecutive_seq_and_continuous_times(normal: dict) -> None:
    for kind, rate, per_batch in (("ecg_ii", RATE, 20), ("pleth", PLETH_RATE_HZ, 5)):
        waves = normal["waves"][kind]
        assert [w.seq for w in waves] == list(range(len(waves)))
        assert {len(w.samples) for w in waves} == {per_batch}
        assert {w.rate_hz for w in waves} == {rate}
        starts = np.array([w.start_ms for w in waves])
        assert np.allclose(np.diff(starts), per_batch * 1000 / rate)


def test_numerics_come_once_a_second_and_nibp_less_often(normal: dict) -> None:
    by_kind: dict[str, list[Numeric]] = defaultdict(list)
    for n in normal["numerics"]:
        by_kind[n.kind].append(n)
    for kind in ("spo2", "rr", "etco2", "temp"):
        assert len(by_kind[kind]) == 60
        times = np.array([n.time_ms for n in by_kind[kind]])
        assert np.allclose(np.diff(times), 1000)
    assert len(by_kind["hr"]) == len(by_kind["pulse"]) == 60
    assert [round((n.time_ms - 1_795_000_000_000) / 1000) for n in by_kind["nibp_sys"]] == [2, 32]
    assert all(97 <= n.value <= 99 for n in by_kind["spo2"])
    assert all(100 <= n.value <= 135 for n in by_kind["nibp_sys"])
    for sys, dia, mean in zip(by_kind["nibp_sys"], by_kind["nibp_dia"], by_kind["nibp_mean"],
                              strict=True):  # fmt: skip
        assert dia.value < mean.value < sys.value
    assert all(10 <= n.value <= 18 for n in by_kind["rr"])
    assert all(33 <= n.value <= 40 for n in by_kind["etco2"])
    assert all(36.0 <= n.value <= 37.2 for n in by_kind["temp"])


def trend(scenario: str, seconds: float, seed: int = 3) -> list[tuple[float, dict[str, float]]]:
    patient = SyntheticPatient(RATE, scenario, seed=seed)
    out = []
    for _ in range(int(seconds / 0.5)):
        step = patient.step(0.5)  # big steps: minutes of patient in well under a second
        if step.numerics:
            out.append((patient.t_s, step.numerics))
    return out


def first(series: list[tuple[float, dict[str, float]]], kind: str, test) -> float | None:  # type: ignore[no-untyped-def]
    return next((t for t, n in series if kind in n and test(n[kind])), None)


def alarms(scenario: str, seconds: float) -> list[tuple[float, str, str]]:
    """Feed the scenario's numerics to the default alarm limits: when does what trip?"""
    engine = AlarmEngine("or-1")
    raised = []
    patient = SyntheticPatient(RATE, scenario, seed=3, start_ms=0)
    for batch in patient.batches(200):
        for n in batch.numerics:
            for what, alarm in engine.evaluate(n):
                if what == "raised":
                    raised.append((n.time_ms / 1000, alarm.kind, alarm.condition))
        if batch.t_s >= seconds:
            return raised
    return raised


def test_desaturation_falls_to_the_low_80s_and_recovers() -> None:
    series = trend("desaturation", 150)
    spo2 = [n["spo2"] for _, n in series if "spo2" in n]
    below = first(series, "spo2", lambda v: v < 90)
    assert below is not None and 25 <= below <= 60
    assert 80 <= min(spo2) <= 85
    recovered = first([(t, n) for t, n in series if t > 70], "spo2", lambda v: v >= 95)
    assert recovered is not None and recovered <= 110
    assert spo2[-1] >= 96
    tripped = [a for a in alarms("desaturation", 80) if a[1] == "spo2"]
    assert tripped and tripped[0][2] == "low" and 25 <= tripped[0][0] <= 60


def test_bradycardia_falls_to_about_40_and_recovers() -> None:
    series = trend("bradycardia", 150)
    hr = [n["hr"] for _, n in series if "hr" in n]
    below = first(series, "hr", lambda v: v < 50)
    assert below is not None and 20 <= below <= 45
    assert 36 <= min(hr) <= 45
    recovered = first([(t, n) for t, n in series if t > 60], "hr", lambda v: v >= 65)
    assert recovered is not None and recovered <= 100
    tripped = [a for a in alarms("bradycardia", 60) if a[1] == "hr"]
    assert tripped and tripped[0][2] == "low" and 20 <= tripped[0][0] <= 45
    # The ECG slows with the numeric: R peaks ~1.5 s apart at the bottom.
    patient = SyntheticPatient(RATE, "bradycardia", seed=3)
    patient.step(35.0)
    ecg = patient.step(10.0).ecg
    rr = np.diff(peaks(ecg, RATE, 0.6, 0.25)) / RATE
    assert 60 / np.mean(rr) == pytest.approx(40, abs=5)


def test_hypotension_drops_nibp_with_a_reflex_tachycardia() -> None:
    series = trend("hypotension", 200)
    sys = [(t, n["nibp_sys"]) for t, n in series if "nibp_sys" in n]
    assert min(v for _, v in sys) < 90
    assert max(n["hr"] for _, n in series if "hr" in n) > 95
    assert any(a[1] == "nibp_sys" for a in alarms("hypotension", 130))


def test_normal_trips_no_alarm() -> None:
    assert alarms("normal", 300) == []


def test_repeat_brings_the_event_back() -> None:
    patient = SyntheticPatient(RATE, "bradycardia", seed=3, repeat=True)
    cycle = SCENARIOS["bradycardia"].cycle_s
    lows = []
    for _ in range(int(2 * cycle)):
        hr = patient.step(1.0).numerics.get("hr")
        if hr is not None and hr < 50:
            lows.append(patient.t_s)
    assert lows and lows[0] < cycle < lows[-1]


def test_same_seed_same_patient() -> None:
    a = SyntheticPatient(RATE, "desaturation", seed=42, start_ms=0)
    b = SyntheticPatient(RATE, "desaturation", seed=42, start_ms=0)
    c = SyntheticPatient(RATE, "desaturation", seed=43, start_ms=0)
    for _ in range(100):
        sa, sb, sc = a.step(0.04), b.step(0.04), c.step(0.04)
        assert np.array_equal(sa.ecg, sb.ecg) and np.array_equal(sa.pleth, sb.pleth)
        assert sa.numerics == sb.numerics
    assert not np.array_equal(sa.ecg, sc.ecg)


@pytest.mark.parametrize("rate", [125, 250, 1000])
def test_other_ecg_rates(rate: int) -> None:
    patient = SyntheticPatient(rate, seed=1)
    batch = next(patient.batches(40))
    ecg = next(w for w in batch.waveforms if w.kind == "ecg_ii")
    assert ecg.rate_hz == rate and len(ecg.samples) == rate * 40 // 1000
    step = patient.step(1.0)
    assert len(step.ecg) == rate and len(step.pleth) == PLETH_RATE_HZ


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        SyntheticPatient(300)
    with pytest.raises(ValueError):
        SyntheticPatient(scenario="asystole")
    assert set(SCENARIO_NAMES) == set(SCENARIOS)  # the CLI's choices (kept numpy-free)
