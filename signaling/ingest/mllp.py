"""HL7 v2 ORU^R01 over MLLP: patient monitors and gateways push vitals into a room.

The way in that bedside monitors and their gateways already speak (IHE PCD-01, "Communicate PCD
Data"): an ORU^R01 message per MLLP frame, one ACK back per message. Two OBX coding styles are
read:

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
  Optional: without it the listener numbers accepted batches itself (see ``MllpListener``).

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

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal

import hl7.mllp

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import (
    NUMERICS,
    WAVEFORMS,
    Numeric,
    NumericKind,
    VitalsBatch,
    Waveform,
    WaveformKind,
    make_numeric,
    make_waveform,
    numeric_kind,
    waveform_kind,
)

__all__ = [
    "MDC_NAMES",
    "MDC_UNITS",
    "FrameError",
    "Hl7Error",
    "MllpClient",
    "MllpListener",
    "ParsedOru",
    "ack_fields",
    "build_ack",
    "build_oru",
    "format_dtm",
    "parse_binding",
    "parse_bindings",
    "parse_dtm",
    "parse_oru",
    "read_frame",
    "send_oru",
]

log = logging.getLogger("orbridge.mllp")

AckCode = Literal["AA", "AE", "AR"]
Ingest = Callable[[VitalsBatch], Awaitable[Any]]

VT, FS, CR = b"\x0b", b"\x1c", b"\r"  # MLLP: <VT> message <FS><CR>
MLLP_PORT = 2575  # IANA "hl7"
MAX_MESSAGE_BYTES = 1024 * 1024
PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"  # MSH-21

# HL7 table 0357 (message error condition codes) used in ERR-3
E_SEGMENT = 100  # segment sequence error
E_REQUIRED = 101  # required field missing
E_DATA_TYPE = 102  # data type error
E_MESSAGE_TYPE = 200  # unsupported message type
E_EVENT = 201  # unsupported event code
E_UNKNOWN_KEY = 204  # unknown key identifier (here: an unbound device)
E_APPLICATION = 207  # application error (refused values, delivery failure)
_E_TEXT = {
    0: "Message accepted",
    E_SEGMENT: "Segment sequence error",
    E_REQUIRED: "Required field missing",
    E_DATA_TYPE: "Data type error",
    E_MESSAGE_TYPE: "Unsupported message type",
    E_EVENT: "Unsupported event code",
    E_UNKNOWN_KEY: "Unknown key identifier",
    E_APPLICATION: "Application internal error",
}

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
_UNIT_NAME = {code: name for name, code in _MDC_UNIT_NAMES.items()}
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
# The unit build_oru writes for each kind, as an MDC code
_KIND_UNIT_CODE = {
    "hr": 264864, "pulse": 264864, "spo2": 262688, "nibp_sys": 266016, "nibp_dia": 266016,
    "nibp_mean": 266016, "rr": 264928, "temp": 268192, "etco2": 266016, "ecg_ii": 266418,
    "pleth": 262656,
}  # fmt: skip
# IEEE 11073 FLOAT-Type special values (NaN, NRes, +INF, -INF, reserved): "no value"
_MDC_SPECIAL = {8388607.0, -8388608.0, 8388606.0, -8388606.0, -8388607.0}
_SKIP_STATUS = {"X", "D", "W"}  # cannot be obtained, deleted, wrong (OBX-11)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")  # HL7 NM: no exponent, no NaN
_LOINC = re.compile(r"\d{1,7}-\d")
_DTM = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(?:\.(\d{1,4}))?([+-]\d{4})?")
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


class Hl7Error(DomainError):
    """A message that cannot be accepted: what the ACK says (MSA-1, ERR-2, ERR-3, text)."""

    def __init__(self, message: str, *, ack: AckCode = "AE", hl7_code: int = E_APPLICATION,
                 location: str = "") -> None:  # fmt: skip
        super().__init__("invalid_hl7", message)
        self.ack = ack
        self.hl7_code = hl7_code
        self.location = location  # ERR-2: segment^sequence^field


# ---------------------------------------------------------------------------------------------
# HL7 v2 encoding


@dataclass(frozen=True, slots=True)
class _Delims:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    sub: str = "&"

    @property
    def encoding(self) -> str:
        return self.component + self.repetition + self.escape + self.sub

    def escape_text(self, text: str) -> str:
        e = self.escape
        out = text.replace(e, f"{e}E{e}")
        for char, code in ((self.field, "F"), (self.component, "S"), (self.sub, "T"),
                           (self.repetition, "R")):  # fmt: skip
            out = out.replace(char, f"{e}{code}{e}")
        out = out.replace("\r\n", "\n").replace("\r", "\n").replace("\n", f"{e}.br{e}")
        return "".join(c for c in out if c >= " " or c == "\t")

    def unescape(self, text: str) -> str:
        e = self.escape
        if not e or e not in text:
            return text
        out: list[str] = []
        i = 0
        while i < len(text):
            j = text.find(e, i)
            k = text.find(e, j + 1) if j >= 0 else -1
            if j < 0 or k < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            out.append(self._sequence(text[j + 1 : k], text[j : k + 1]))
            i = k + 1
        return "".join(out)

    def _sequence(self, code: str, literal: str) -> str:
        simple = {"F": self.field, "S": self.component, "T": self.sub, "R": self.repetition,
                  "E": self.escape, ".br": "\n"}  # fmt: skip
        if code in simple:
            return simple[code]
        if code.startswith("X") and len(code) > 1 and len(code) % 2 == 1:
            with contextlib.suppress(ValueError):
                raw = bytes.fromhex(code[1:])
                return raw.decode("utf-8") if _is_utf8(raw) else raw.decode("latin-1")
        if code in ("H", "N") or code[:1] in (".", "C", "M", "Z"):
            return ""  # highlighting, formatting and character-set switches carry no data here
        return literal


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


DEFAULT_DELIMS = _Delims()


class _Segment:
    __slots__ = ("d", "fields", "name", "position")

    def __init__(self, fields: list[str], d: _Delims, position: int) -> None:
        self.name = fields[0]
        self.fields = fields  # fields[n] is field n (MSH: fields[1] is the field separator)
        self.d = d
        self.position = position  # 1-based segment number in the message

    def raw(self, n: int) -> str:
        return self.fields[n] if n < len(self.fields) else ""

    def components(self, n: int) -> list[str]:
        """Field n's first repetition, unescaped, first subcomponent of each component."""
        raw = self.raw(n)
        if self.name == "MSH" and n <= 2:
            return [raw]
        rep = raw.split(self.d.repetition, 1)[0]
        return [self.d.unescape(c.split(self.d.sub, 1)[0]) for c in rep.split(self.d.component)]

    def get(self, n: int, component: int = 1) -> str:
        comps = self.components(n)
        return comps[component - 1].strip() if component <= len(comps) else ""

    def where(self, n: int) -> str:
        return f"{self.name}^{self.position}^{n}"


def _split_message(text: str) -> tuple[list[_Segment], _Delims]:
    text = text.lstrip("\ufeff \t\r\n\x00")
    if not text.startswith("MSH") or len(text) < 8:
        raise Hl7Error("not an HL7 v2 message: it must begin with an MSH segment", ack="AR",
                       hl7_code=E_SEGMENT, location="MSH^1")  # fmt: skip
    fs = text[3]
    end = text.find(fs, 4)
    enc = text[4:end] if end >= 0 else ""
    if (
        fs.isalnum()
        or fs.isspace()
        or not 2 <= len(enc) <= 5
        or fs in enc
        or len(set(enc)) != len(enc)
        or any(c.isalnum() or c.isspace() for c in enc)
    ):
        raise Hl7Error("MSH-1/MSH-2: bad field separator or encoding characters", ack="AR",
                       hl7_code=E_DATA_TYPE, location="MSH^1^2")  # fmt: skip
    d = _Delims(fs, enc[0], enc[1], enc[2] if len(enc) > 2 else "\\",
                enc[3] if len(enc) > 3 else "&")  # fmt: skip
    segments: list[_Segment] = []
    # HL7 ends segments with CR; LF and CRLF are what hand-made and some gateway messages use.
    for line in re.split(r"\r\n|\r|\n", text):
        if not line.strip():
            continue
        parts = line.split(fs)
        name = parts[0].strip()
        position = len(segments) + 1
        if not _SEGMENT_NAME.fullmatch(name):
            raise Hl7Error(f"segment {position}: {name[:12]!r} is not a segment name",
                           hl7_code=E_SEGMENT, location=f"^{position}")  # fmt: skip
        if name == "MSH":
            if segments:
                raise Hl7Error("one message per MLLP frame (a second MSH found)",
                               hl7_code=E_SEGMENT, location=f"MSH^{position}")  # fmt: skip
            fields = ["MSH", fs, *parts[1:]]
        else:
            fields = [name, *parts[1:]]
        segments.append(_Segment(fields, d, position))
    return segments, d


def _decode(body: bytes) -> tuple[str, str]:
    """The text and the codec to answer in: UTF-8 when it decodes, else ISO 8859-1 (what
    MSH-18 ``8859/1`` monitors send; every byte decodes)."""
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return body.decode("latin-1"), "latin-1"


def parse_dtm(text: str) -> float:
    """HL7 DTM to ms since the epoch (0.1 ms resolution); no zone means UTC."""
    m = _DTM.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not an HL7 timestamp")
    year, month, day, hour, minute, second, frac, zone = m.groups()
    tz = UTC
    if zone:
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{text!r}: bad time zone")
        tz = timezone(sign * offset)
    moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0),
                      int(minute or 0), int(second or 0), tzinfo=tz)  # fmt: skip
    tenths = int(moment.timestamp()) * 10_000 + int((frac or "").ljust(4, "0"))
    return tenths / 10.0


def format_dtm(ms: float) -> str:
    """ms since the epoch to HL7 DTM in UTC with 0.1 ms resolution."""
    tenths = round(ms * 10)
    seconds, rest = divmod(tenths, 10_000)
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y%m%d%H%M%S}.{rest:04d}+0000"


def _number(text: str) -> float | None:
    text = text.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


# ---------------------------------------------------------------------------------------------
# ORU^R01 -> vitals


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


# ---------------------------------------------------------------------------------------------
# ACK


def _peek_msh(message: str) -> _Segment | None:
    """The MSH of a message that may be broken beyond parsing, for the ACK's header."""
    with contextlib.suppress(Hl7Error):
        start = message.find("MSH")
        if start >= 0:
            first = re.split(r"\r\n|\r|\n", message[start:], maxsplit=1)[0]
            segments, _ = _split_message(first)
            return segments[0]
    return None


def build_ack(
    message: str,
    code: AckCode,
    error: str | None = None,
    *,
    hl7_code: int | None = None,
    location: str = "",
    control_id: str | None = None,
    time_ms: float | None = None,
) -> str:
    """An original-mode ACK for `message`: MSH with sender and receiver swapped, MSA with the
    code and the original MSH-10, and (unless AA) ERR with the reason. Works on any text: what
    cannot be read from the original stays empty."""
    d = DEFAULT_DELIMS
    msh = _peek_msh(message)

    def echo(n: int) -> str:  # a field of the original, re-encoded with the standard delimiters
        if msh is None:
            return ""
        return d.component.join(d.escape_text(c) for c in msh.components(n)).rstrip(d.component)

    event = (msh.get(9, 2) if msh is not None else "") or "R01"
    version = (msh.get(12) if msh is not None else "") or "2.6"
    processing = (msh.get(11) if msh is not None else "") or "P"
    ack_id = control_id or uuid.uuid4().hex[:20]
    now = time.time() * 1000 if time_ms is None else time_ms
    original_id = d.escape_text(msh.get(10)) if msh is not None else ""
    header = [
        "MSH", d.encoding, echo(5) or "ORBRIDGE", echo(6), echo(3), echo(4),
        format_dtm(now), "", f"ACK{d.component}{d.escape_text(event)}{d.component}ACK",
        ack_id, d.escape_text(processing), d.escape_text(version),
    ]  # fmt: skip
    msa = ["MSA", code, original_id]
    segments = [d.field.join(header)]
    if code == "AA":
        segments.append(d.field.join(msa))
    else:
        reason = " ".join((error or "").split()) or "message refused"  # one line
        number = hl7_code if hl7_code is not None else E_APPLICATION
        msa.append(d.escape_text(reason[:80]))  # MSA-3: ST, 80 characters
        segments.append(d.field.join(msa))
        where = d.component.join(d.escape_text(p) for p in location.split("^")) if location else ""
        err_code = d.component.join((str(number), _E_TEXT.get(number, ""), "HL70357"))
        # ERR-2 location, ERR-3 HL7 error code, ERR-4 severity, ERR-8 user message
        err = ["ERR", "", where, err_code, "E", "", "", "", d.escape_text(reason[:250])]
        segments.append(d.field.join(err))
    return "\r".join(segments) + "\r"


# ---------------------------------------------------------------------------------------------
# vitals -> ORU^R01 (for the synthetic patient and tests)


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def build_oru(
    device_id: str,
    numerics: Sequence[Numeric],
    waveforms: Sequence[Waveform],
    control_id: str,
    style: Literal["mdc", "loinc"] = "mdc",
    *,
    time_ms: float | None = None,
    sending_application: str = "ORBRIDGE_SIM",
    sending_facility: str = "",
    patient_id: str | None = None,
) -> str:
    """An ORU^R01 as an IHE PCD-01 monitor sends it: MSH, PID (when `patient_id`), OBR, an MDS
    OBX carrying the device id in OBX-18, one NM OBX per numeric (MDC- or LOINC-coded), and per
    waveform an NA OBX followed by its sample rate and ORBRIDGE_SEQ companions. Waveforms are
    MDC-coded in both styles (LOINC has no codes for waveform channels)."""
    d = DEFAULT_DELIMS
    esc = d.escape_text
    now = time.time() * 1000 if time_ms is None else time_ms
    stamp = format_dtm(now)
    dev = esc(device_id)
    msh = ["MSH", d.encoding, esc(sending_application), esc(sending_facility), "ORBRIDGE", "",
           stamp, "", "ORU^R01^ORU_R01", esc(control_id), "P", "2.6", "", "", "AL", "NE", "",
           "UNICODE UTF-8", "", "", PCD01_PROFILE]  # fmt: skip
    lines = [d.field.join(msh)]
    if patient_id is not None:
        lines.append(f"PID|||{esc(patient_id)}^^^ORBRIDGE^PI")
    filler = f"{esc(control_id)}^{esc(sending_application)}"
    lines.append(f"OBR|1|{filler}|{filler}|182777000^monitoring of patient^SCT|||{stamp}")
    rows: list[list[str]] = [
        ["", "69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC", "1.0.0.0", "", "", "X", "", dev]
    ]
    for n in numerics:
        kind = NUMERICS[n.kind]
        if style == "loinc":
            ident = f"{kind.loinc}^{esc(kind.label)}^LN"
            unit = f"{esc(kind.unit)}^^UCUM"
            sub_id, status = "", "F"
        else:
            ident = f"{kind.mdc[0]}^{MDC_NAMES.get(kind.mdc[0], '')}^MDC"
            unit_code = _KIND_UNIT_CODE[n.kind]
            unit = f"{unit_code}^{_UNIT_NAME[unit_code]}^MDC"
            sub_id, status = f"1.0.1.{kind.mdc[0]}", "R"
        rows.append(["NM", ident, sub_id, _fmt(n.value), unit, status, format_dtm(n.time_ms), dev])
    for i, w in enumerate(waveforms, 1):
        kind_w = WAVEFORMS[w.kind]
        unit_code = _KIND_UNIT_CODE[w.kind]
        sub_id = f"1.0.2.{i}"
        samples = d.component.join(_fmt(s) for s in w.samples)
        rows.append(["NA", f"{kind_w.mdc[0]}^{MDC_NAMES.get(kind_w.mdc[0], '')}^MDC", sub_id,
                     samples, f"{unit_code}^{_UNIT_NAME[unit_code]}^MDC", "R",
                     format_dtm(w.start_ms), dev])  # fmt: skip
        rows.append(["NM", "0^MDC_ATTR_SAMP_RATE^MDC", f"{sub_id}.1", _fmt(w.rate_hz),
                     "264608^MDC_DIM_PER_SEC^MDC", "R", "", ""])  # fmt: skip
        rows.append(["NM", "0^ORBRIDGE_SEQ^99ORB", f"{sub_id}.2", str(w.seq), "", "R", "", ""])
    for set_id, (vt, ident, sub_id, value, unit, status, stamp_obx, equipment) in enumerate(
        rows, 1
    ):
        fields = ["OBX", str(set_id), vt, ident, sub_id, value, unit, "", "", "", "", status, "",
                  "", stamp_obx, "", "", "", equipment]  # fmt: skip
        lines.append(d.field.join(fields).rstrip(d.field))
    return "\r".join(lines) + "\r"


# ---------------------------------------------------------------------------------------------
# MLLP framing


class FrameError(Exception):
    """The stream broke MLLP in a way that ends the connection (reason in `kind`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind  # oversized | timeout | idle | truncated | garbage


async def read_frame(
    reader: asyncio.StreamReader, idle_timeout: float | None, read_timeout: float | None
) -> tuple[bytes, int] | None:
    """The next MLLP frame's content and how many garbage bytes came before it; None when the
    peer closed between frames. The reader's `limit` bounds the frame (LimitOverrunError)."""
    try:
        async with asyncio.timeout(idle_timeout):
            head = await reader.readuntil(VT)
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise FrameError("garbage") from exc
    except TimeoutError as exc:
        raise FrameError("idle") from exc
    try:
        async with asyncio.timeout(read_timeout):
            # The end is FS; the CR after it is left to be skipped before the next VT, which
            # also tolerates senders that omit it.
            body = await reader.readuntil(FS)
    except asyncio.IncompleteReadError as exc:
        raise FrameError("truncated") from exc
    except asyncio.LimitOverrunError as exc:
        raise FrameError("oversized") from exc
    except TimeoutError as exc:
        raise FrameError("timeout") from exc
    garbage = len(head) - 1 - (1 if head.startswith(CR) else 0)
    body = body[:-1]
    restart = body.rfind(VT)  # a frame begun again without being ended: the last start counts
    if restart >= 0:
        garbage += restart + 1
        body = body[restart + 1 :]
    return body, garbage


# ---------------------------------------------------------------------------------------------
# Server


def parse_binding(text: str) -> tuple[str, str]:
    """``DEVICE=ROOM`` (the CLI's ``--mllp-bind``) as a pair."""
    device, sep, room = text.partition("=")
    if not sep or not device.strip() or not room.strip():
        raise ValueError(f"expected DEVICE=ROOM, got {text!r}")
    return device.strip(), room.strip()


def parse_bindings(items: Sequence[str] | None) -> dict[str, str]:
    return dict(parse_binding(item) for item in items or ())


class MllpListener:
    """An MLLP server taking ORU^R01 from monitors and gateways and giving each accepted message
    to `ingest` as a VitalsBatch for the room its device is bound to.

    Every message gets an ACK: AA when ingested; AE (or AR for a message type other than
    ORU^R01 or text that is not HL7) with the reason in MSA-3 and ERR otherwise. A connection is
    closed (nothing else is touched) for a frame above `max_message_bytes`, a frame not ended
    within `read_timeout` seconds of its start, `idle_timeout` seconds without a frame, or more
    than `max_connections` at once. Bytes outside frames are skipped.

    Waveforms without an ORBRIDGE_SEQ companion are numbered here: per (device, kind), one
    after the last accepted batch, starting at 0 for each listener.
    A resent message (same device, control id and bytes: its ACK was lost) is acknowledged
    again but not ingested twice."""

    def __init__(
        self,
        ingest: Ingest,
        *,
        host: str = "127.0.0.1",
        port: int = MLLP_PORT,
        bindings: Mapping[str, str] | None = None,
        default_room: str | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        read_timeout: float = 30.0,
        idle_timeout: float | None = 600.0,
        max_connections: int = 64,
        ingest_timeout: float = 10.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._ingest = ingest
        self.host = host
        self.port = port  # the bound port after start() (useful with port=0)
        # Device ids match case-insensitively: EUI-64s come in either case.
        self.bindings = {k.strip().casefold(): v for k, v in (bindings or {}).items()}
        self.default_room = default_room
        self.max_message_bytes = max_message_bytes
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.ingest_timeout = ingest_timeout
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._seqs: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._recent: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._closing = False
        # counters for metrics
        self.connections_total = 0
        self.connections_refused = 0  # over max_connections
        self.messages_accepted = 0
        self.messages_rejected = 0  # answered AE or AR
        self.messages_duplicate = 0  # resent, acknowledged, not ingested again
        self.frames_oversized = 0
        self.frames_timed_out = 0  # begun and not ended in time
        self.connections_idle_closed = 0
        self.garbage_bytes = 0

    @property
    def connections_active(self) -> int:
        return len(self._tasks)

    def stats(self) -> dict[str, int]:
        names = ("connections_total", "connections_active", "connections_refused",
                 "messages_accepted", "messages_rejected", "messages_duplicate",
                 "frames_oversized", "frames_timed_out", "connections_idle_closed",
                 "garbage_bytes")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def room_for(self, device_id: str) -> str | None:
        return self.bindings.get(device_id.strip().casefold(), self.default_room)

    async def start(self) -> None:
        self._closing = False
        self._server = await hl7.mllp.start_hl7_server(
            self._serve, self.host, self.port, limit=self.max_message_bytes
        )
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("MLLP listening on %s:%d (%d device bindings, default room %s)", self.host,
                 self.port, len(self.bindings), self.default_room or "none")  # fmt: skip

    async def close(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: hl7.mllp.HL7StreamReader,
                     writer: hl7.mllp.HL7StreamWriter) -> None:  # fmt: skip
        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self._tasks) >= self.max_connections:
            self.connections_refused += 1
            writer.transport.abort()
            return
        # hl7's protocol does not keep the task it creates: this set is its only strong
        # reference (and what close() cancels).
        self._tasks.add(task)
        self.connections_total += 1
        peer = writer.get_extra_info("peername")
        try:
            while True:
                frame = await read_frame(reader, self.idle_timeout, self.read_timeout)
                if frame is None:
                    break
                body, garbage = frame
                self.garbage_bytes += garbage
                ack = await self._handle(body, peer)
                writer.writeblock(ack)
                async with asyncio.timeout(self.read_timeout):
                    await writer.drain()  # a peer that never reads its ACKs is let go
        except FrameError as exc:
            if exc.kind == "oversized":
                self.frames_oversized += 1
            elif exc.kind == "timeout":
                self.frames_timed_out += 1
            elif exc.kind == "idle":
                self.connections_idle_closed += 1
            log.info("MLLP %s: closing the connection (%s)", peer, exc.kind)
        except (ConnectionError, TimeoutError) as exc:
            log.info("MLLP %s: connection lost (%s)", peer, exc.__class__.__name__)
        except Exception:  # one broken connection must never take the listener down
            log.exception("MLLP %s: unexpected error", peer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _handle(self, body: bytes, peer: Any) -> bytes:
        received_ms = self._clock()
        text, codec = _decode(body)
        ack_code: AckCode = "AA"
        reason: str | None = None
        hl7_code: int | None = None
        location = ""
        device = "?"
        try:
            parsed = parse_oru(text, received_ms, next_seq=self._next_seq)
            device = parsed.device_id
            room = self.room_for(device)
            if room is None:
                raise Hl7Error(f"device {device} is not bound to a room", hl7_code=E_UNKNOWN_KEY,
                               location="OBX^1^18")  # fmt: skip
            key = (device.casefold(), parsed.control_id, hashlib.sha256(body).digest())
            if key in self._recent:
                self.messages_duplicate += 1
            else:
                batch = VitalsBatch(room, received_ms, parsed.numerics, parsed.waveforms,
                                    via="hl7")  # fmt: skip
                async with asyncio.timeout(self.ingest_timeout):
                    await self._ingest(batch)
                self._remember(key, parsed)
        except Hl7Error as exc:
            ack_code, reason, hl7_code, location = exc.ack, exc.message, exc.hl7_code, exc.location
        except DomainError as exc:
            ack_code, reason, hl7_code = "AE", exc.message, E_APPLICATION
        except TimeoutError:
            ack_code, reason, hl7_code = "AE", "vitals not delivered in time", E_APPLICATION
        except Exception:
            log.exception("MLLP %s: ingest failed", peer)
            ack_code, reason, hl7_code = "AE", "internal error", E_APPLICATION
        if ack_code == "AA":
            self.messages_accepted += 1
        else:
            self.messages_rejected += 1
            log.info("MLLP %s device %s: %s %s", peer, device, ack_code, reason)
        ack = build_ack(text, ack_code, reason, hl7_code=hl7_code, location=location)
        return ack.encode(codec, "replace")

    def _next_seq(self, device: str, kind: str) -> int:
        return self._seqs.get((device.casefold(), kind), 0)

    def _remember(self, key: tuple[str, str, bytes], parsed: ParsedOru) -> None:
        self._recent[key] = None
        if len(self._recent) > 512:
            self._recent.popitem(last=False)
        for w in parsed.waveforms:
            seq_key = (parsed.device_id.casefold(), w.kind)
            self._seqs[seq_key] = w.seq + 1
            self._seqs.move_to_end(seq_key)
        while len(self._seqs) > 4096:  # bounded even when a default room admits any device
            self._seqs.popitem(last=False)


# ---------------------------------------------------------------------------------------------
# Client


class MllpClient:
    """One MLLP connection to send messages and wait for each ACK (what a monitor does)."""

    def __init__(self, host: str, port: int, *, timeout: float = 10.0,
                 encoding: str = "utf-8") -> None:  # fmt: skip
        self.host = host
        self.port = port
        self.timeout = timeout
        self.encoding = encoding
        self._reader: hl7.mllp.HL7StreamReader | None = None
        self._writer: hl7.mllp.HL7StreamWriter | None = None

    async def connect(self) -> None:
        async with asyncio.timeout(self.timeout):
            self._reader, self._writer = await hl7.mllp.open_hl7_connection(
                self.host, self.port, limit=MAX_MESSAGE_BYTES
            )

    async def send(self, message: str) -> str:
        """Send one message and return its ACK's text."""
        if self._writer is None or self._reader is None:
            await self.connect()
        assert self._writer is not None and self._reader is not None
        async with asyncio.timeout(self.timeout):
            self._writer.writeblock(message.encode(self.encoding))
            await self._writer.drain()
            try:
                frame = await read_frame(self._reader, None, None)
            except FrameError as exc:
                raise ConnectionError(f"MLLP: the ACK frame was {exc.kind}") from exc
        if frame is None:
            raise ConnectionError("the server closed the connection without an ACK")
        return _decode(frame[0])[0]

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def __aenter__(self) -> MllpClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()


async def send_oru(host: str, port: int, message: str, *, ack_timeout: float = 10.0) -> str:
    """Send one message over a fresh MLLP connection; the ACK's text."""
    async with MllpClient(host, port, timeout=ack_timeout) as client:
        return await client.send(message)


def ack_fields(ack: str) -> dict[str, str]:
    """MSA-1, MSA-2, MSA-3 and ERR-3.1 of an ACK (for clients and tests)."""
    segments, _ = _split_message(ack)
    out = {"code": "", "control_id": "", "text": "", "error_code": "", "message_type": ""}
    out["message_type"] = segments[0].raw(9)
    for seg in segments:
        if seg.name == "MSA":
            out.update(code=seg.get(1), control_id=seg.get(2), text=seg.get(3))
        elif seg.name == "ERR":
            out["error_code"] = seg.get(3)
    return out
