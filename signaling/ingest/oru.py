"""HL7 v2 ORU^R01 into the vitals model: what patient monitors and gateways report.

The message bedside monitors and their gateways already send (IHE PCD-01, "Communicate PCD
Data"). Two OBX coding styles are read:

* IEEE 11073 MDC: OBX-3 ``150456^MDC_PULS_OXIM_SAT_O2^MDC``, OBX-6 ``262688^MDC_DIM_PERCENT^MDC``
  (or UCUM text in OBX-6). A context-free code may also come as ``partition::term`` (``2::16770``).
* LOINC: OBX-3 ``8867-4^Heart rate^LN``, OBX-6 ``/min^^UCUM``.
  OBX-3 components 4-6 (the alternate identifier) are tried when components 1-3 mean nothing here.

Value types: NM for numerics, NA for waveforms (the samples separated by the component separator,
as in IHE PCD's waveform content module). A waveform OBX is described by companion OBX that follow
it, tied to it by OBX-4: the companion's sub-id is the waveform's sub-id plus ``.n`` (without
sub-ids, a companion belongs to the nearest waveform before it):

* sample rate: OBX-3 ``0^MDC_ATTR_SAMP_RATE^MDC``, NM value, OBX-6 empty, ``Hz``, ``/s`` or MDC
  ``264608^MDC_DIM_PER_SEC`` / ``264640^MDC_DIM_HZ``. Required.
* sequence number: OBX-3 ``0^ORBRIDGE_SEQ^99ORB`` (a local code: HL7 reserves ``99zzz`` coding
  systems for them), NM value, the batch's number in a per (device, waveform kind) counter.
  Optional: without it the listener numbers accepted batches itself (``next_seq``; see
  ``MllpListener`` in mllp.py).

Times: OBX-14, else the OBR-7 of the OBX's group, else the arrival time; HL7 DTM
``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``, UTC when no zone is given. A waveform's time is
that of its first sample. The device is OBX-18 (first component, first OBX that has one), else
MSH-3, else MSH-4. OBX with unknown codes, other value types, status X/D/W (OBX-11), no value, or
an IEEE 11073 "not available" special value (NaN, NRes, +/-INF) are ignored and counted; every
other value goes through ``make_numeric``/``make_waveform``, and one bad value refuses the whole
message (one ACK cannot accept half a message). PID is never read: rooms are bound to devices, and
patient identity has no business here.

Units converted on the way in: degF to Cel, kPa to mm[Hg], uV to mV. MDC unit codes (IEEE
11073-10101 partition 4, context-free code = 4 * 65536 + term code) in ``MDC_UNITS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import (
    Numeric,
    NumericKind,
    Waveform,
    WaveformKind,
    make_numeric,
    make_waveform,
    numeric_kind,
    waveform_kind,
)
from orbridge.signaling.ingest.hl7_codec import (
    E_APPLICATION,
    E_DATA_TYPE,
    E_EVENT,
    E_MESSAGE_TYPE,
    E_REQUIRED,
    Hl7Error,
    _number,
    _Segment,
    _split_message,
    parse_dtm,
)

__all__ = ["MDC_NAMES", "MDC_UNITS", "ParsedOru", "parse_oru"]

# IEEE 11073-10101 units (partition 4, MDC_PART_DIM): context-free code -> UCUM
MDC_UNITS: dict[int, str] = {
    262656: "1",  # MDC_DIM_DIMLESS (512)
    262688: "%",  # MDC_DIM_PERCENT (544)
    264864: "/min",  # MDC_DIM_BEAT_PER_MIN (2720)
    264928: "/min",  # MDC_DIM_RESP_PER_MIN (2784)
    266016: "mm[Hg]",  # MDC_DIM_MMHG (3872)
    265987: "kPa",  # MDC_DIM_KILO_PASCAL (3843)
    268192: "Cel",  # MDC_DIM_DEGC (6048)
    266560: "[degF]",  # MDC_DIM_FAHR (4416)
    266418: "mV",  # MDC_DIM_MILLI_VOLT (4274 = VOLT 4256 + milli 18)
    266419: "uV",  # MDC_DIM_MICRO_VOLT (4275 = VOLT 4256 + micro 19)
    264608: "/s",  # MDC_DIM_PER_SEC (2464)
    264640: "Hz",  # MDC_DIM_HZ (2496)
}
_MDC_UNIT_NAMES = {
    "MDC_DIM_DIMLESS": 262656,
    "MDC_DIM_PERCENT": 262688,
    "MDC_DIM_BEAT_PER_MIN": 264864,
    "MDC_DIM_RESP_PER_MIN": 264928,
    "MDC_DIM_MMHG": 266016,
    "MDC_DIM_KILO_PASCAL": 265987,
    "MDC_DIM_DEGC": 268192,
    "MDC_DIM_FAHR": 266560,
    "MDC_DIM_MILLI_VOLT": 266418,
    "MDC_DIM_MICRO_VOLT": 266419,
    "MDC_DIM_PER_SEC": 264608,
    "MDC_DIM_HZ": 264640,
}
# Units some devices send that are not the kind's own: convert rather than refuse.
_UNIT_ALIASES = {"degF": "[degF]", "°F": "[degF]", "F": "[degF]", "µV": "uV", "kpa": "kPa"}
_CONVERT: dict[tuple[str, str], Callable[[float], float]] = {
    ("[degF]", "Cel"): lambda v: (v - 32.0) * 5.0 / 9.0,
    ("kPa", "mm[Hg]"): lambda v: v * 760.0 / 101.325,
    ("uV", "mV"): lambda v: v / 1000.0,
}
_RATE_UNITS = {"", "Hz", "/s", "1/s", "s-1"}

# Observation names, for OBX-3 without a numeric code and for build_oru
MDC_NAMES: dict[int, str] = {
    147842: "MDC_ECG_HEART_RATE",
    149530: "MDC_PULS_OXIM_PULS_RATE",
    150456: "MDC_PULS_OXIM_SAT_O2",
    150021: "MDC_PRESS_BLD_NONINV_SYS",
    150022: "MDC_PRESS_BLD_NONINV_DIA",
    150023: "MDC_PRESS_BLD_NONINV_MEAN",
    150301: "MDC_PRESS_CUFF_SYS",
    150302: "MDC_PRESS_CUFF_DIA",
    150303: "MDC_PRESS_CUFF_MEAN",
    151562: "MDC_RESP_RATE",
    150344: "MDC_TEMP",
    150364: "MDC_TEMP_BODY",
    151708: "MDC_AWAY_CO2_ET",
    131328: "MDC_ECG_ELEC_POTL",
    131330: "MDC_ECG_ELEC_POTL_II",
    150452: "MDC_PULS_OXIM_PLETH",
}
_MDC_BY_NAME = {name: code for code, name in MDC_NAMES.items()}
# IEEE 11073 FLOAT-Type special values (NaN, NRes, +INF, -INF, reserved): "no value"
_MDC_SPECIAL = {8388607.0, -8388608.0, 8388606.0, -8388606.0, -8388607.0}
_SKIP_STATUS = {"X", "D", "W"}  # cannot be obtained, deleted, wrong (OBX-11)

_LOINC = re.compile(r"\d{1,7}-\d")


@dataclass(slots=True)
class ParsedOru:
    control_id: str  # MSH-10
    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    device_id: str  # OBX-18.1, else MSH-3.1, else MSH-4.1
    numerics: list[Numeric] = field(default_factory=list)
    waveforms: list[Waveform] = field(default_factory=list)
    ignored: int = 0  # OBX segments that carried nothing usable here
    version: str = ""  # MSH-12


@dataclass(slots=True)
class _Wave:
    seg: _Segment
    kind: WaveformKind
    sub_id: str
    time_ms: float
    rate: float | None = None
    seq: int | None = None


def _mdc_code(code: str) -> int | None:
    code = code.strip()
    if code.isdigit():
        return int(code)
    partition, sep, term = code.partition("::")  # "2::16770" = partition 2, term 16770
    if sep and partition.isdigit() and term.isdigit():
        return int(partition) * 65536 + int(term)
    return None


def _observation(seg: _Segment) -> NumericKind | WaveformKind | str | None:
    """What OBX-3 names: a kind, "rate"/"seq" for waveform companions, or None (unknown)."""
    comps = [*seg.components(3), "", "", "", "", "", ""]
    for code, text, system in (comps[0:3], comps[3:6]):
        code, text, system = code.strip(), text.strip(), system.strip().upper()
        names = {code.upper(), text.upper()}
        if "MDC_ATTR_SAMP_RATE" in names:
            return "rate"
        if "ORBRIDGE_SEQ" in names:
            return "seq"
        if system in ("LN", "LOINC") or (not system and _LOINC.fullmatch(code)):
            kind = numeric_kind(loinc=code)
            if kind is not None:
                return kind
            continue
        number = _mdc_code(code) if system in ("MDC", "") else None
        if number is None and system == "MDC":
            number = _MDC_BY_NAME.get(text.upper())
        if number:
            found = numeric_kind(mdc=number) or waveform_kind(mdc=number)
            if found is not None:
                return found
    return None


def _unit(seg: _Segment) -> str | None:
    comps = [*seg.components(6), "", "", ""]
    code, text, system = comps[0].strip(), comps[1].strip(), comps[2].strip().upper()
    if not code and not text:
        return None
    if system == "MDC" or (code.isdigit() and len(code) >= 6) or text.upper().startswith("MDC_DIM"):
        number = int(code) if code.isdigit() else _MDC_UNIT_NAMES.get(text.upper())
        if number in MDC_UNITS:
            return MDC_UNITS[number]
        return text or code  # an MDC unit not known here: refused with its own name
    unit = code or text
    return _UNIT_ALIASES.get(unit, unit)


def _converter(unit: str | None, expected: str) -> tuple[str | None, Callable[[float], float]]:
    convert = _CONVERT.get((unit or "", expected))
    if convert is None:
        return unit, float
    return expected, convert


def _time(seg: _Segment, group_ms: float | None, received_ms: int) -> float:
    raw = seg.get(14)
    if raw:
        try:
            return parse_dtm(raw)
        except ValueError as exc:
            raise Hl7Error(f"{_label(seg)}: OBX-14 {exc}", hl7_code=E_DATA_TYPE,
                           location=seg.where(14)) from exc  # fmt: skip
    return group_ms if group_ms is not None else float(received_ms)


def _label(seg: _Segment) -> str:
    set_id = seg.get(1)
    return f"OBX {set_id}" if set_id else f"segment {seg.position} (OBX)"


def _values(seg: _Segment) -> list[str]:
    """OBX-5 as a flat list of components over all repetitions (an NA value's samples)."""
    d = seg.d
    raw = seg.raw(5)
    return [d.unescape(c.split(d.sub, 1)[0]) for rep in raw.split(d.repetition)
            for c in rep.split(d.component)]  # fmt: skip


def parse_oru(
    message: str, received_ms: int, *, next_seq: Callable[[str, str], int] | None = None
) -> ParsedOru:
    """Read an ORU^R01 into vitals. Raises ``Hl7Error`` (what to ACK) for a message that is not
    a usable ORU^R01, and ``DomainError`` ``invalid_vitals`` for a refused value.

    ``next_seq(device_id, kind)`` numbers a waveform that carries no ORBRIDGE_SEQ companion
    (default: 0)."""
    segments, _ = _split_message(message)
    msh = segments[0]
    code, event = msh.get(9, 1).upper(), msh.get(9, 2).upper()
    if code != "ORU":
        raise Hl7Error(f"unsupported message type {code or '(none)'}^{event}: only ORU^R01",
                       ack="AR", hl7_code=E_MESSAGE_TYPE, location="MSH^1^9")  # fmt: skip
    if event != "R01":
        raise Hl7Error(f"unsupported event ORU^{event or '(none)'}: only ORU^R01", ack="AR",
                       hl7_code=E_EVENT, location="MSH^1^9")  # fmt: skip
    control_id = msh.get(10)
    if not control_id:
        raise Hl7Error("MSH-10 (message control id) is missing", hl7_code=E_REQUIRED,
                       location="MSH^1^10")  # fmt: skip
    parsed = ParsedOru(control_id, msh.get(3), msh.get(4), "", version=msh.get(12))

    # Each OBX with the OBR-7 of its group.
    observations: list[tuple[_Segment, float | None]] = []
    group_ms: float | None = None
    for seg in segments[1:]:
        if seg.name == "OBR":
            group_ms = None
            if seg.get(7):
                try:
                    group_ms = parse_dtm(seg.get(7))
                except ValueError as exc:
                    raise Hl7Error(f"OBR-7 {exc}", hl7_code=E_DATA_TYPE,
                                   location=seg.where(7)) from exc  # fmt: skip
        elif seg.name == "OBX":
            observations.append((seg, group_ms))
    if not observations:
        raise Hl7Error("no OBX segment: nothing observed", hl7_code=E_REQUIRED, location="OBX")
    device = next((s.get(18) for s, _ in observations if s.get(18)), "")
    parsed.device_id = device or parsed.sending_application or parsed.sending_facility
    if not parsed.device_id:
        raise Hl7Error("no device id (OBX-18, MSH-3 or MSH-4)", hl7_code=E_REQUIRED,
                       location="OBX^1^18")  # fmt: skip
    source = parsed.device_id

    waves: list[_Wave] = []
    # Every NA OBX in order, None for those not read (unknown code, skipped status), so that a
    # companion of an unknown waveform never lands on a known one.
    arrays: list[tuple[str, _Wave | None]] = []
    companions: list[tuple[_Segment, str, int]] = []  # segment, "rate"|"seq", arrays before
    for seg, obr_ms in observations:
        ident = [*seg.components(3), "", "", "", "", ""]
        if not any(ident[i].strip() for i in (0, 1, 3, 4)):  # neither code nor text
            raise Hl7Error(f"{_label(seg)}: OBX-3 (observation identifier) is missing",
                           hl7_code=E_REQUIRED, location=seg.where(3))  # fmt: skip
        status = seg.get(11).upper()
        value_type = seg.get(2).upper()
        meaning = _observation(seg)
        skip = status in _SKIP_STATUS or meaning is None or not seg.raw(5).strip()
        if value_type == "NA" and (skip or not isinstance(meaning, WaveformKind)):
            arrays.append((seg.get(4), None))
        if skip:
            parsed.ignored += 1
            continue
        try:
            if isinstance(meaning, str):
                companions.append((seg, meaning, len(arrays)))
            elif isinstance(meaning, NumericKind) and value_type in ("NM", "ST"):
                # ST: some monitors type numerics as strings; only a number counts then
                numeric = None
                if value_type == "NM" or _number(seg.get(5)) is not None:
                    numeric = _numeric(seg, meaning, obr_ms, received_ms, source)
                if numeric is None:
                    parsed.ignored += 1
                else:
                    parsed.numerics.append(numeric)
            elif isinstance(meaning, WaveformKind) and value_type == "NA":
                wave = _Wave(seg, meaning, seg.get(4), _time(seg, obr_ms, received_ms))
                waves.append(wave)
                arrays.append((wave.sub_id, wave))
            else:
                parsed.ignored += 1  # a value type this kind does not come as
        except DomainError as exc:
            if isinstance(exc, Hl7Error):
                raise
            raise DomainError(exc.code, f"{_label(seg)}: {exc.message}") from exc

    for seg, what, arrays_before in companions:
        owner = _owner(seg.get(4), arrays, arrays_before)
        value = _number(seg.get(5))
        if owner is None:
            parsed.ignored += 1
            continue
        if value is None:
            raise Hl7Error(f"{_label(seg)}: OBX-5 {seg.get(5)!r} is not a number",
                           hl7_code=E_DATA_TYPE, location=seg.where(5))  # fmt: skip
        if what == "rate":
            unit = _unit(seg) or ""
            if unit not in _RATE_UNITS:
                raise Hl7Error(f"{_label(seg)}: sample rate unit {unit!r}, expected Hz",
                               hl7_code=E_DATA_TYPE, location=seg.where(6))  # fmt: skip
            owner.rate = round(value, 6)
        elif value.is_integer() and value >= 0:
            owner.seq = int(value)
        else:
            raise Hl7Error(f"{_label(seg)}: sequence number {seg.get(5)!r}",
                           hl7_code=E_DATA_TYPE, location=seg.where(5))  # fmt: skip

    for wave in waves:
        try:
            parsed.waveforms.append(_waveform(wave, source, next_seq))
        except DomainError as exc:
            if isinstance(exc, Hl7Error):
                raise
            raise DomainError(exc.code, f"{_label(wave.seg)}: {exc.message}") from exc

    if not parsed.numerics and not parsed.waveforms:
        raise Hl7Error(f"no usable observations ({parsed.ignored} OBX ignored: unknown codes, "
                       "no values or not available)", hl7_code=E_APPLICATION,
                       location="OBX")  # fmt: skip
    return parsed


def _owner(sub_id: str, arrays: list[tuple[str, _Wave | None]], before: int) -> _Wave | None:
    """The waveform a companion OBX describes: the NA OBX whose OBX-4 prefixes its own, else
    the nearest NA OBX before it; None when that one is not read here."""
    if sub_id:
        matches = [(a, w) for a, w in arrays if a and sub_id.startswith(a + ".")]
        if matches:
            return max(matches, key=lambda m: len(m[0]))[1]
    return arrays[before - 1][1] if before else None


def _numeric(seg: _Segment, kind: NumericKind, obr_ms: float | None, received_ms: int,
             source: str) -> Numeric | None:  # fmt: skip
    value = _number(seg.get(5))
    if value is None:
        raise Hl7Error(f"{_label(seg)}: OBX-5 {seg.get(5)[:40]!r} is not a number (NM)",
                       hl7_code=E_DATA_TYPE, location=seg.where(5))  # fmt: skip
    if value in _MDC_SPECIAL:
        return None
    unit, convert = _converter(_unit(seg), kind.unit)
    time_ms = _time(seg, obr_ms, received_ms)
    return make_numeric(kind, convert(value), unit, round(time_ms), source)


def _waveform(wave: _Wave, source: str, next_seq: Callable[[str, str], int] | None) -> Waveform:
    seg, kind = wave.seg, wave.kind
    if wave.rate is None:
        raise Hl7Error(f"{_label(seg)}: {kind.key} has no sample rate (an OBX "
                       "0^MDC_ATTR_SAMP_RATE^MDC after it)", hl7_code=E_REQUIRED,
                       location=seg.where(3))  # fmt: skip
    samples: list[float] = []
    for i, text in enumerate(_values(seg), 1):
        value = _number(text)
        if value is None:
            raise Hl7Error(f"{_label(seg)}: sample {i} {text[:20]!r} is not a number",
                           hl7_code=E_DATA_TYPE, location=seg.where(5))  # fmt: skip
        samples.append(value)
    unit, convert = _converter(_unit(seg), kind.unit)
    if convert is not float:
        samples = [convert(s) for s in samples]
    seq = wave.seq
    if seq is None:
        seq = next_seq(source, kind.key) if next_seq is not None else 0
    return make_waveform(kind, wave.time_ms, wave.rate, seq, samples, source, unit)
