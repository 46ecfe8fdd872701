"""The sending side of HL7 v2 over MLLP, as a monitor does it: for ``orbridge vitals --hl7``
(signaling/cli/vitals.py) and the tests.

``build_oru`` writes vitals as an IHE PCD-01 ORU^R01 (what ``parse_oru`` reads back);
``MllpClient`` keeps one connection open and waits for each message's ACK.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Literal

import hl7.mllp

from orbridge.rooms.vitals.model import NUMERICS, WAVEFORMS, Numeric, Waveform
from orbridge.signaling.ingest.hl7_codec import DEFAULT_DELIMS, _decode, format_dtm
from orbridge.signaling.ingest.mllp import MAX_MESSAGE_BYTES, FrameError, read_frame
from orbridge.signaling.ingest.oru import _MDC_UNIT_NAMES, MDC_NAMES

__all__ = ["MllpClient", "build_oru", "send_oru"]

PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"  # MSH-21
# The unit build_oru writes for each kind, as an MDC code
_KIND_UNIT_CODE = {
    "hr": 264864, "pulse": 264864, "spo2": 262688, "nibp_sys": 266016, "nibp_dia": 266016,
    "nibp_mean": 266016, "rr": 264928, "temp": 268192, "etco2": 266016, "ecg_ii": 266418,
    "pleth": 262656,
}  # fmt: skip
_UNIT_NAME = {code: name for name, code in _MDC_UNIT_NAMES.items()}


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
