"""A synthetic patient: lead II ECG, a finger pleth and the numerics a bedside monitor shows.

No real ECG recording ships in any pip package, so the demo, the tests and `orbridge vitals`
use this model (numpy only, written from the physiology):

* **Rhythm.** Beats are scheduled one at a time. Each RR interval is the scenario's mean
  (60 / HR) modulated by respiratory sinus arrhythmia (RR lengthens in expiration), a ~0.1 Hz
  Mayer-wave (LF) oscillator with a wandering phase, and a little white jitter, so the RR
  series has the HF and LF peaks of a real one.
* **Morphology.** Every beat is a sum of Gaussians around its R peak (P, Q, R, S and a
  two-part asymmetric T), in mV as lead II shows them. Wave positions after the R peak stretch
  with sqrt(RR) (Bazett: QT shortens as the rate rises); the PR interval barely changes.
  Respiration swings the electrical axis, so R amplitude moves a few percent with each breath.
* **Artefacts.** Baseline wander from respiration plus a slow drift, muscle (EMG) noise and
  mains hum, all small: what a well-prepared patient on a good monitor looks like.
* **Pleth.** Each beat's pulse reaches the finger a pulse transit time after its R peak
  (longer when the pressure is low): a steep systolic upstroke, a dicrotic notch and a
  diastolic (reflected) wave, in arbitrary units scaled by perfusion and breathing.
* **Numerics.** HR is 60 / mean of the last 8 RR intervals (how monitors average), pulse rate
  the same from the pulse arrivals, SpO2 a saturation smoothed like an oximeter's ~4 s
  average, NIBP a cuff reading every `nibp_interval_s`, and RR, EtCO2 and temperature drifting
  slowly (Ornstein-Uhlenbeck processes around the scenario's values).
* **Scenarios.** Keyframed targets: `normal`, `desaturation` (SpO2 to ~82 % over 40 s, then
  recovery), `bradycardia` (HR to ~40/min), `hypotension` (NIBP to ~78/44 with a
  compensating tachycardia and a weaker pleth). With `repeat` the event comes back every cycle.

Determinism: the same seed and the same sequence of `step` sizes give identical output.
Cost: a 40 ms step at 500 Hz is a few dozen small numpy operations (`benchmarks/patient_sim.py`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from orbridge.rooms.vitals.model import (
    NUMERICS,
    WAVEFORMS,
    Numeric,
    Waveform,
    make_numeric,
    make_waveform,
)

__all__ = [
    "SCENARIOS",
    "PatientStep",
    "SimBatch",
    "SyntheticPatient",
]

PLETH_RATE_HZ = 125.0  # every ECG rate we accept (125-1000 Hz) is a multiple of it

# One beat of lead II: (amplitude mV, centre s, width s) relative to the R peak at RR = 1 s.
# `stretch` marks waves that move with sqrt(RR) (repolarisation), the rest stay put.
_WAVES = np.array(
    [
        # amp,   mu,     sigma, stretch
        [0.15, -0.175, 0.024, 0.0],  # P: atrial depolarisation, PR ~ 160-180 ms
        [-0.10, -0.030, 0.009, 0.0],  # Q
        [1.15, 0.000, 0.0105, 0.0],  # R: ~1 mV in lead II
        [-0.26, 0.032, 0.010, 0.0],  # S; QRS ~ 90 ms in all
        [0.22, 0.225, 0.052, 1.0],  # T, slow ascending limb
        [0.15, 0.285, 0.034, 1.0],  # T, steeper descending limb (the asymmetry of a real T)
    ]
)
_R_INDEX = 2

# One pulse at the finger relative to its foot: systolic peak, late-systolic shoulder,
# diastolic (reflected) wave and the run-off; the dip before the reflected wave is the
# dicrotic notch.
_PULSE = np.array(
    [
        [1.00, 0.115, 0.042],
        [0.42, 0.215, 0.055],
        [0.30, 0.375, 0.065],
        [0.12, 0.560, 0.140],  # diastolic run-off: the volume drains, not drops to zero
    ]
)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    cycle_s: float  # the timeline's length; with `repeat` it starts again after this
    # parameter -> keyframes (t_s, value); missing parameters keep the normal value
    keys: dict[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)


_NORMAL = {
    "hr": 72.0,
    "spo2": 98.2,
    "sys": 118.0,
    "dia": 76.0,
    "rr": 14.0,
    "etco2": 36.0,
    "temp": 36.6,
    "perfusion": 1.0,
}

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("normal", "a stable anaesthetised adult", 120.0),
        Scenario(
            "desaturation",
            "SpO2 falls to ~82 % over 40 s from t=10 s, holds, recovers by t=95 s",
            150.0,
            {
                "spo2": ((0, 98.2), (10, 98.2), (50, 81.5), (65, 81.5), (95, 98.2)),
                "hr": ((0, 72), (25, 74), (55, 88), (70, 88), (100, 74)),  # hypoxic drive
                "etco2": ((0, 36), (20, 36), (55, 44), (70, 44), (95, 36)),  # hypoventilation
                "rr": ((0, 14), (20, 14), (50, 9), (65, 9), (90, 14)),
            },
        ),
        Scenario(
            "bradycardia",
            "HR falls to ~40/min between t=10 s and t=30 s, holds 30 s, recovers by t=80 s",
            150.0,
            {
                "hr": ((0, 72), (10, 72), (30, 40), (60, 40), (80, 72)),
                "sys": ((0, 118), (15, 118), (35, 96), (60, 96), (85, 118)),
                "dia": ((0, 76), (15, 76), (35, 58), (60, 58), (85, 76)),
                "perfusion": ((0, 1.0), (15, 1.0), (35, 0.8), (60, 0.8), (85, 1.0)),
            },
        ),
        Scenario(
            "hypotension",
            "NIBP falls to ~78/44 over 60 s from t=10 s with a reflex tachycardia, "
            "holds, recovers by t=170 s",
            240.0,
            {
                "sys": ((0, 118), (10, 118), (70, 78), (130, 78), (170, 118)),
                "dia": ((0, 76), (10, 76), (70, 44), (130, 44), (170, 76)),
                "hr": ((0, 72), (15, 72), (75, 102), (130, 102), (175, 72)),
                "perfusion": ((0, 1.0), (10, 1.0), (70, 0.45), (130, 0.45), (170, 1.0)),
                "etco2": ((0, 36), (20, 36), (75, 31), (130, 31), (170, 36)),
            },
        ),
    )
}


def _keyframe(keys: tuple[tuple[float, float], ...], t: float) -> float:
    """Cosine-eased interpolation between keyframes: physiology changes without corners."""
    if t <= keys[0][0]:
        return float(keys[0][1])
    for (t0, v0), (t1, v1) in itertools.pairwise(keys):
        if t <= t1:
            x = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return float(v0 + (v1 - v0) * (1 - math.cos(math.pi * x)) / 2)
    return float(keys[-1][1])


class _Drift:
    """An Ornstein-Uhlenbeck process: a value wandering around 0 with a memory of `tau_s`."""

    __slots__ = ("sigma", "tau_s", "x")

    def __init__(self, sigma: float, tau_s: float, x: float = 0.0) -> None:
        self.sigma, self.tau_s, self.x = sigma, tau_s, x

    def advance(self, dt: float, rng: np.random.Generator) -> float:
        a = math.exp(-dt / self.tau_s)
        self.x = self.x * a + self.sigma * math.sqrt(1 - a * a) * float(rng.standard_normal())
        return self.x


_Event = tuple[str, float, float]  # (numeric kind, value, simulated time s)


class PatientStep(NamedTuple):
    ecg: np.ndarray  # mV, lead II, at `rate_hz`
    pleth: np.ndarray  # arbitrary units, at PLETH_RATE_HZ
    numerics: dict[str, float]  # kinds due in this step (latest value of each)


@dataclass(slots=True)
class SimBatch:
    """One `batch_ms` slice as the normalized model has it: ready to send any way."""

    t_s: float  # simulated time at the end of the slice
    waveforms: list[Waveform]
    numerics: list[Numeric]


class SyntheticPatient:
    """A simulated patient; advance it with `step(dt_s)` or iterate `batches()`."""

    def __init__(
        self,
        rate_hz: float = 500,
        scenario: str = "normal",
        seed: int | None = None,
        *,
        mains_hz: float = 50.0,
        nibp_interval_s: float = 30.0,
        nibp_first_s: float = 2.0,
        repeat: bool = False,
        start_ms: float | None = None,
        source: str = "synthetic-monitor",
    ) -> None:
        if rate_hz not in WAVEFORMS["ecg_ii"].rates:
            raise ValueError(f"ECG rate {rate_hz} Hz: use one of {WAVEFORMS['ecg_ii'].rates}")
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}: {', '.join(SCENARIOS)}")
        if nibp_interval_s <= 0:
            raise ValueError("nibp_interval_s must be positive")
        self.rate_hz = float(rate_hz)
        self.pleth_rate_hz = PLETH_RATE_HZ
        self.scenario = SCENARIOS[scenario]
        self.repeat = repeat
        self.mains_hz = mains_hz
        self.nibp_interval_s = nibp_interval_s
        self.source = source
        self.start_ms = float(time.time() * 1000 if start_ms is None else start_ms)
        seeds = np.random.SeedSequence(seed).spawn(3)
        # Separate streams: the noise drawn per sample does not shift the rhythm or drifts.
        self._rng_beat, self._rng_noise, self._rng_drift = (np.random.default_rng(s) for s in seeds)

        self.t_s = 0.0  # simulated time reached
        self._n_ecg = 0
        self._n_pleth = 0
        # beats: R time, RR to the next beat, R-amplitude factor, pulse foot time, pulse amp
        self._beats: deque[tuple[float, float, float, float, float]] = deque()
        self.r_times: deque[float] = deque(maxlen=64)  # every R peak scheduled (ground truth)
        self._feet: deque[float] = deque(maxlen=64)
        # The patient lived before we connected: ~8 s of past beats, so HR shows from second 1.
        self._next_r = -8.0 + 0.8 * float(self._rng_beat.random())
        self._resp_phase = float(self._rng_drift.uniform(0, 2 * math.pi))
        self._lf_phase = float(self._rng_drift.uniform(0, 2 * math.pi))
        self._drift = {
            "hr": _Drift(2.0, 40.0),
            "spo2": _Drift(0.5, 25.0),
            "sys": _Drift(3.0, 60.0),
            "dia": _Drift(2.0, 60.0),
            "rr": _Drift(0.7, 45.0),
            "etco2": _Drift(0.8, 40.0),
            "temp": _Drift(0.04, 300.0),
            "baseline": _Drift(0.03, 6.0),  # mV, slow electrode drift
            "mains": _Drift(0.3, 20.0),  # relative hum amplitude change
        }
        self._sat = self._param("spo2", 0.0)
        self._next_numeric_s = 1.0
        self._next_nibp_s = nibp_first_s
        self._seq = {"ecg_ii": 0, "pleth": 0}
        self._schedule_beats(0.0)

    # -- scenario and slow state ------------------------------------------------------------

    def _scenario_t(self, t: float) -> float:
        return t % self.scenario.cycle_s if self.repeat else t

    def _param(self, name: str, t: float) -> float:
        keys = self.scenario.keys.get(name)
        base = _keyframe(keys, self._scenario_t(t)) if keys else _NORMAL[name]
        drift = self._drift.get(name)
        return base + (drift.x if drift is not None else 0.0)

    def _resp_hz(self) -> float:
        return max(self._param("rr", self.t_s), 4.0) / 60.0

    def _schedule_beats(self, until: float) -> None:
        """Schedule beats (R peaks) up to `until`: the RR of each is decided at its R peak."""
        rng = self._rng_beat
        resp_hz = self._resp_hz()
        while self._next_r <= until:
            r = self._next_r
            hr = min(max(self._param("hr", r), 20.0), 250.0)
            resp = self._resp_phase + 2 * math.pi * resp_hz * (r - self.t_s)
            # RSA: RR longest in expiration (sin < 0 here is inspiration); weaker at high rates.
            rsa = 0.045 * (72.0 / max(hr, 40.0)) ** 0.5 * math.sin(resp)
            lf = 0.022 * math.sin(2 * math.pi * 0.1 * r + self._lf_phase)
            self._lf_phase += 0.25 * float(rng.standard_normal())  # Mayer waves are not clocks
            rr = (60.0 / hr) * (1.0 + rsa + lf + 0.008 * float(rng.standard_normal()))
            rr = min(max(rr, 0.24), 2.5)
            r_amp = (1.0 + 0.06 * math.sin(resp + 0.7)) * (1.0 + 0.015 * rng.standard_normal())
            # Pulse transit time to the finger: ~0.23 s, longer at low pressure.
            sys = self._param("sys", r)
            ptt = 0.23 + 0.0015 * (118.0 - sys) + 0.004 * float(rng.standard_normal())
            pulse_amp = max(self._param("perfusion", r), 0.05) * (1.0 + 0.04 * math.sin(resp))
            self._beats.append((r, rr, float(r_amp), r + ptt, pulse_amp))
            self.r_times.append(r)
            self._feet.append(r + ptt)
            self._next_r = r + rr

    # -- rendering ---------------------------------------------------------------------------

    def _render_ecg(self, t: np.ndarray) -> np.ndarray:
        if not len(t):
            return t
        t0 = float(t[0])
        out = np.zeros_like(t)
        for r, rr, r_amp, _, _ in self._beats:
            if r < t0 - 1.0 or r > float(t[-1]) + 0.35:
                continue
            stretch = math.sqrt(min(max(rr, 0.3), 2.0))
            amp = _WAVES[:, 0].copy()
            amp[_R_INDEX] *= r_amp
            scale = np.where(_WAVES[:, 3] > 0, stretch, 1.0)
            mu = r + _WAVES[:, 1] * scale
            sigma = _WAVES[:, 2] * scale
            d = (t[None, :] - mu[:, None]) / sigma[:, None]
            out += (amp[:, None] * np.exp(-0.5 * d * d)).sum(axis=0)
        # Baseline wander from breathing (chest impedance) and a slow electrode drift.
        resp_hz = self._resp_hz()
        resp = self._resp_phase + 2 * math.pi * resp_hz * (t - self.t_s)
        out += 0.045 * np.sin(resp) + self._drift["baseline"].x
        # Muscle noise and mains hum: small, as on a monitor with its filters in "monitor" mode.
        out += 0.008 * self._rng_noise.standard_normal(len(t))
        hum = 0.006 * (1.0 + self._drift["mains"].x)
        out += hum * np.sin(2 * math.pi * self.mains_hz * t)
        return out

    def _render_pleth(self, t: np.ndarray) -> np.ndarray:
        if not len(t):
            return t
        t0 = float(t[0])
        out = np.zeros_like(t)
        for _, rr, _, foot, amp in self._beats:
            if foot < t0 - 1.6 or foot > float(t[-1]) + 0.1:
                continue
            squeeze = min(1.0, (rr / 0.8) ** 0.5)  # a fast heart shortens the pulse
            mu = foot + _PULSE[:, 1] * squeeze
            sigma = _PULSE[:, 2] * squeeze
            d = (t[None, :] - mu[:, None]) / sigma[:, None]
            out += amp * (_PULSE[:, 0, None] * np.exp(-0.5 * d * d)).sum(axis=0)
        resp = self._resp_phase + 2 * math.pi * self._resp_hz() * (t - self.t_s)
        out += 0.06 * np.sin(resp - 0.9)  # respiratory variation of venous volume
        out += 0.004 * self._rng_noise.standard_normal(len(t))
        return out

    # -- numerics ----------------------------------------------------------------------------

    def _rate(self, times: deque[float], now: float) -> float | None:
        done = [x for x in times if x <= now][-9:]  # the last 8 intervals
        if len(done) < 3:
            return None
        return 60.0 * (len(done) - 1) / (done[-1] - done[0])

    def _numerics_at(self, t: float) -> list[_Event]:
        out: list[_Event] = []
        hr = self._rate(self.r_times, t)
        if hr is not None:
            out.append(("hr", float(round(hr)), t))
        pulse = self._rate(self._feet, t)
        if pulse is not None:
            out.append(("pulse", float(round(pulse)), t))
        out.append(("spo2", float(min(100, max(50, round(self._sat)))), t))
        out.append(("rr", float(round(max(self._param("rr", t), 4.0))), t))
        out.append(("etco2", float(round(max(self._param("etco2", t), 0.0))), t))
        out.append(("temp", round(self._param("temp", t), 1), t))
        return out

    def _nibp_at(self, t: float) -> list[_Event]:
        noise = self._rng_drift.standard_normal(2) * 2.5  # cuff reading scatter
        sys = round(self._param("sys", t) + float(noise[0]))
        dia = round(min(self._param("dia", t) + float(noise[1]), sys - 15))
        mean = round(dia + (sys - dia) / 3)
        return [
            ("nibp_sys", float(sys), t),
            ("nibp_dia", float(dia), t),
            ("nibp_mean", float(mean), t),
        ]

    # -- advancing ---------------------------------------------------------------------------

    def _advance(self, dt_s: float) -> tuple[np.ndarray, np.ndarray, list[_Event]]:
        if dt_s <= 0:
            raise ValueError("dt_s must be positive")
        t_end = self.t_s + dt_s
        n_ecg = round(t_end * self.rate_hz)
        n_pleth = round(t_end * self.pleth_rate_hz)
        self._schedule_beats(t_end + 0.35)  # the next P wave starts before its R peak
        t_ecg = np.arange(self._n_ecg, n_ecg) / self.rate_hz
        t_pleth = np.arange(self._n_pleth, n_pleth) / self.pleth_rate_hz
        ecg = self._render_ecg(t_ecg)
        pleth = self._render_pleth(t_pleth)

        events: list[_Event] = []
        # Slow state moves in steps of at most 1 s so a big dt_s still tracks the timeline.
        t = self.t_s
        while t < t_end - 1e-9:
            h = min(1.0, t_end - t)
            for drift in self._drift.values():
                drift.advance(h, self._rng_drift)
            t += h
            target = min(self._param("spo2", t), 100.0)
            self._sat += (target - self._sat) * (1 - math.exp(-h / 4.0))  # oximeter averaging
            while self._next_numeric_s <= t + 1e-9:
                events.extend(self._numerics_at(self._next_numeric_s))
                self._next_numeric_s += 1.0
            while self._next_nibp_s <= t + 1e-9:
                events.extend(self._nibp_at(self._next_nibp_s))
                self._next_nibp_s += self.nibp_interval_s

        self._resp_phase = (self._resp_phase + 2 * math.pi * self._resp_hz() * dt_s) % (2 * math.pi)
        self.t_s = t_end
        self._n_ecg, self._n_pleth = n_ecg, n_pleth
        while self._beats and self._beats[0][3] < t_end - 2.0:
            self._beats.popleft()
        return ecg, pleth, events

    def step(self, dt_s: float) -> PatientStep:
        """Advance by `dt_s`: the ECG and pleth samples of the slice and the numerics due."""
        ecg, pleth, events = self._advance(dt_s)
        return PatientStep(ecg, pleth, {kind: value for kind, value, _ in events})

    def batches(self, batch_ms: float = 40.0) -> Iterator[SimBatch]:
        """Endless `batch_ms` slices as validated `Waveform`s (consecutive `seq`) and `Numeric`s.

        Numerics come about once a second, NIBP every `nibp_interval_s`; every time is
        `start_ms` plus simulated time.
        """
        if batch_ms <= 0:
            raise ValueError("batch_ms must be positive")
        ecg_kind, pleth_kind = WAVEFORMS["ecg_ii"], WAVEFORMS["pleth"]
        while True:
            first_ecg, first_pleth = self._n_ecg, self._n_pleth
            ecg, pleth, events = self._advance(batch_ms / 1000.0)
            waves: list[Waveform] = []
            for kind, samples, first, rate in (
                (ecg_kind, ecg, first_ecg, self.rate_hz),
                (pleth_kind, pleth, first_pleth, self.pleth_rate_hz),
            ):
                if not len(samples):
                    continue
                values = np.round(samples, 4).tolist()  # 0.1 uV: below any ADC's resolution
                start = self.start_ms + first * 1000.0 / rate
                waves.append(
                    make_waveform(kind, start, rate, self._seq[kind.key], values, self.source)
                )
                self._seq[kind.key] += 1
            nums = [
                make_numeric(NUMERICS[k], v, None, int(self.start_ms + t * 1000), self.source)
                for k, v, t in events
            ]
            yield SimBatch(self.t_s, waves, nums)
