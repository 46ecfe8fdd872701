"""HL7 v2 ACKs: the answer to every message the MLLP listener receives, and reading one back.

Original-mode acknowledgment: MSH with sender and receiver swapped, MSA with the code and the
original MSH-10. AA when the message was ingested; otherwise AE (refused values, an unbound
device, a delivery failure) or AR (a message type other than ORU^R01, text that is not HL7),
with the reason in MSA-3 and an ERR segment (ERR-3 from HL7 table 0357). An ACK can be built
for any text: a monitor gets an answer even for a message broken beyond parsing.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid

from orbridge.signaling.ingest.hl7_codec import (
    DEFAULT_DELIMS,
    E_APPLICATION,
    E_DATA_TYPE,
    E_EVENT,
    E_MESSAGE_TYPE,
    E_REQUIRED,
    E_SEGMENT,
    E_UNKNOWN_KEY,
    AckCode,
    Hl7Error,
    _Segment,
    _split_message,
    format_dtm,
)

__all__ = ["ack_fields", "build_ack"]

# ERR-3.2: the text of each HL7 table 0357 code used here
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
