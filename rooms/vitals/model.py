"""One vitals model for every way in (Socket.IO, HL7 v2 over MLLP, FHIR R4).

Numerics carry a kind with its LOINC code and UCUM unit; waveforms come as sample batches with a
start time, a sample rate and a per-stream sequence number, so a client can see a gap. The code
table maps the codes monitors and gateways send (IEEE 11073 MDC in HL7 OBX-3, LOINC in FHIR or
LOINC-coded HL7) to one kind, and every value is checked against a plausible range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from orbridge.rooms.errors import DomainError

MAX_SAMPLES = 2000  # per waveform batch (4 s at 500 Hz)
MAX_SOURCE = 64


@dataclass(frozen=True, slots=True)
class NumericKind:
    key: str
    label: str
    loinc: str
    unit: str  # UCUM
    mdc: tuple[int, ...]  # IEEE 11073-10101 codes that mean this
    low: float  # plausible range: outside it a value is refused as a device or typing error
    high: float
    aliases: tuple[str, ...] = ()  # other LOINC codes (and UCUM spellings) accepted


@dataclass(frozen=True, slots=True)
class WaveformKind:
    key: str
    label: str
    unit: str
    mdc: tuple[int, ...]
    rates: tuple[float, ...]  # accepted sample rates (Hz)
    low: float
    high: float


NUMERICS: dict[str, NumericKind] = {
    k.key: k
    for k in (
        NumericKind("hr", "Heart rate", "8867-4", "/min", (147842,), 0, 350),
        NumericKind("pulse", "Pulse rate", "8889-8", "/min", (149530,), 0, 350),
        NumericKind("spo2", "SpO2", "59408-5", "%", (150456,), 0, 100, ("2708-6",)),
        NumericKind("nibp_sys", "NIBP systolic", "8480-6", "mm[Hg]", (150021, 150301), 0, 350),
        NumericKind("nibp_dia", "NIBP diastolic", "8462-4", "mm[Hg]", (150022, 150302), 0, 300),
        NumericKind("nibp_mean", "NIBP mean", "8478-0", "mm[Hg]", (150023, 150303), 0, 320),
        NumericKind("rr", "Respiratory rate", "9279-1", "/min", (151562,), 0, 150),
        NumericKind("temp", "Temperature", "8310-5", "Cel", (150344, 150364), 20, 45),
        NumericKind("etco2", "EtCO2", "19889-5", "mm[Hg]", (151708,), 0, 150),
    )
}

WAVEFORMS: dict[str, WaveformKind] = {
    k.key: k
    for k in (
        # MDC_ECG_ELEC_POTL_II; 131328 is MDC_ECG_ELEC_POTL (lead unspecified): taken as lead II
        WaveformKind("ecg_ii", "ECG II", "mV", (131330, 131328), (125, 250, 500, 1000), -10, 10),
        WaveformKind("pleth", "Pleth", "1", (150452,), (50, 62.5, 100, 125, 250, 500), -1e4, 1e4),
    )
}

_BY_LOINC = {code: k for k in NUMERICS.values() for code in (k.loinc, *k.aliases)}
_BY_MDC_NUMERIC = {code: k for k in NUMERICS.values() for code in k.mdc}
_BY_MDC_WAVE = {code: k for k in WAVEFORMS.values() for code in k.mdc}
# UCUM spellings devices use for the same unit
_UNIT_SYNONYMS = {
    "/min": {"/min", "{beats}/min", "{beat}/min", "bpm", "{breaths}/min", "/mn", "1/min"},
    "%": {"%", "%{sat}"},
    "mm[Hg]": {"mm[Hg]", "mmHg", "mm Hg"},
    "Cel": {"Cel", "degC", "°C", "C"},
    "mV": {"mV", "mv"},
}


def numeric_kind(*, key: str | None = None, loinc: str | None = None,
                 mdc: int | None = None) -> NumericKind | None:  # fmt: skip
    if key is not None:
        return NUMERICS.get(key)
    if loinc is not None:
        return _BY_LOINC.get(loinc)
    if mdc is not None:
        return _BY_MDC_NUMERIC.get(mdc)
    return None


def waveform_kind(*, key: str | None = None, mdc: int | None = None) -> WaveformKind | None:
    if key is not None:
        return WAVEFORMS.get(key)
    if mdc is not None:
        return _BY_MDC_WAVE.get(mdc)
    return None


def same_unit(expected: str, given: str | None) -> bool:
    if not given:
        return True  # a monitor that omits the unit sends the kind's standard unit
    return given.strip() in _UNIT_SYNONYMS.get(expected, {expected})


@dataclass(frozen=True, slots=True)
class Numeric:
    kind: str
    value: float
    time_ms: int  # when measured (the device's time if it says, else the arrival time)
    source: str = ""

    def public(self) -> dict[str, Any]:
        k = NUMERICS[self.kind]
        return {"kind": self.kind, "value": self.value, "unit": k.unit, "loinc": k.loinc,
                "time_ms": self.time_ms, "source": self.source}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Waveform:
    kind: str
    start_ms: float  # time of the first sample
    rate_hz: float
    seq: int  # per (source, kind): consecutive batches have consecutive numbers
    samples: tuple[float, ...]
    source: str = ""

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_ms": self.start_ms, "rate_hz": self.rate_hz,
                "seq": self.seq, "unit": WAVEFORMS[self.kind].unit,
                "samples": list(self.samples), "source": self.source}  # fmt: skip


@dataclass(slots=True)
class VitalsBatch:
    """What one ingest delivers to a room; `received_ms` is the server's clock on arrival."""

    room: str
    received_ms: int
    numerics: list[Numeric] = field(default_factory=list)
    waveforms: list[Waveform] = field(default_factory=list)
    via: str = "socketio"  # socketio | hl7 | fhir

    def public(self) -> dict[str, Any]:
        return {
            "room": self.room,
            "received_ms": self.received_ms,
            "via": self.via,
            "numerics": [n.public() for n in self.numerics],
            "waveforms": [w.public() for w in self.waveforms],
        }


def make_numeric(kind: NumericKind, value: float, unit: str | None, time_ms: int,
                 source: str) -> Numeric:  # fmt: skip
    """Validate and build a numeric; DomainError `invalid_vitals` says what is wrong."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise DomainError("invalid_vitals", f"{kind.key}: value must be a finite number")
    if not same_unit(kind.unit, unit):
        raise DomainError("invalid_vitals", f"{kind.key}: unit {unit!r}, expected {kind.unit}")
    if not kind.low <= value <= kind.high:
        raise DomainError(
            "invalid_vitals", f"{kind.key}: {value} outside the plausible {kind.low}-{kind.high}"
        )
    return Numeric(kind.key, float(value), int(time_ms), source[:MAX_SOURCE])


def make_waveform(kind: WaveformKind, start_ms: float, rate_hz: float, seq: int,
                  samples: list[float] | tuple[float, ...], source: str,
                  unit: str | None = None) -> Waveform:  # fmt: skip
    if rate_hz not in kind.rates:
        raise DomainError(
            "invalid_vitals", f"{kind.key}: sample rate {rate_hz} Hz not in {kind.rates}"
        )
    if not 0 < len(samples) <= MAX_SAMPLES:
        raise DomainError("invalid_vitals", f"{kind.key}: 1-{MAX_SAMPLES} samples per batch")
    if not same_unit(kind.unit, unit):
        raise DomainError("invalid_vitals", f"{kind.key}: unit {unit!r}, expected {kind.unit}")
    if seq < 0 or seq > 2**53:
        raise DomainError("invalid_vitals", f"{kind.key}: bad sequence number")
    low, high = kind.low, kind.high
    for s in samples:
        if not isinstance(s, int | float) or isinstance(s, bool) or not (low <= s <= high):
            raise DomainError(
                "invalid_vitals", f"{kind.key}: samples must be numbers in {low}..{high}"
            )
    return Waveform(kind.key, float(start_ms), float(rate_hz), int(seq),
                    tuple(float(s) for s in samples), source[:MAX_SOURCE])  # fmt: skip
