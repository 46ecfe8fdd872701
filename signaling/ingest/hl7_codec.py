"""HL7 v2 encoding: the codec under every message the MLLP listener reads and every ACK it writes.

Delimiters are taken from MSH-1/MSH-2 (any legal set, not only the default five); a field is
read unescaped, first repetition, first subcomponent of each component. Segments end with CR,
or LF/CRLF as hand-made and some gateway messages end them. Bytes are UTF-8 when they decode,
else ISO 8859-1. DTM is read and written to 0.1 ms, UTC when no zone is given; NM has no
exponent and no NaN. ``Hl7Error`` carries what the ACK answers (MSA-1, ERR-2, and ERR-3 from
HL7 table 0357).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from orbridge.rooms.errors import DomainError

__all__ = [
    "DEFAULT_DELIMS",
    "E_APPLICATION",
    "E_DATA_TYPE",
    "E_EVENT",
    "E_MESSAGE_TYPE",
    "E_REQUIRED",
    "E_SEGMENT",
    "E_UNKNOWN_KEY",
    "AckCode",
    "Hl7Error",
    "format_dtm",
    "parse_dtm",
]

AckCode = Literal["AA", "AE", "AR"]

# HL7 table 0357 (message error condition codes) used in ERR-3
E_SEGMENT = 100  # segment sequence error
E_REQUIRED = 101  # required field missing
E_DATA_TYPE = 102  # data type error
E_MESSAGE_TYPE = 200  # unsupported message type
E_EVENT = 201  # unsupported event code
E_UNKNOWN_KEY = 204  # unknown key identifier (here: an unbound device)
E_APPLICATION = 207  # application error (refused values, delivery failure)

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")  # HL7 NM: no exponent, no NaN
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
