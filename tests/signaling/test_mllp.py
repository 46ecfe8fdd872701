"""HL7 v2 ORU^R01 over MLLP: parsing both coding styles, ACKs, and a listener that survives bad
peers (garbage, endless and oversized frames) over real TCP; connection limits, the idle timeout
and the allow-list are in test_mllp_limits.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import (
    Numeric,
    VitalsBatch,
    make_numeric,
    make_waveform,
    numeric_kind,
    waveform_kind,
)
from orbridge.signaling.cli.hl7_sender import MllpClient, build_oru, send_oru
from orbridge.signaling.ingest.ack import ack_fields, build_ack
from orbridge.signaling.ingest.hl7_codec import Hl7Error, format_dtm, parse_dtm
from orbridge.signaling.ingest.mllp import (
    FS,
    VT,
    MllpListener,
    parse_binding,
    parse_bindings,
    read_frame,
)
from orbridge.signaling.ingest.oru import parse_oru

MONITOR = "00A037EB0A2F0011"  # an EUI-64, as PCD-01 monitors put in OBX-18
BINDINGS = {MONITOR.lower(): "or-2", "VITALSGW": "or-7", "SIM-1": "or-1"}  # case differs


def ms(*args: int, tz: timezone = UTC) -> float:
    return datetime(*args, tzinfo=tz).timestamp() * 1000


CST = timezone(timedelta(hours=8))

# 25 samples of a QRS complex in mV, as an ECG lead II block
ECG_SAMPLES = (
    "0.02^0.03^0.05^0.08^0.1^0.08^0.04^0.01^-0.05^-0.12^0.45^1.25^0.8^-0.3^-0.18^-0.05^0^0.02^"
    "0.05^0.09^0.14^0.18^0.15^0.09^0.03"
)

# Written out as a bedside monitor's gateway sends it (IHE PCD-01, MDC-coded), with escapes
# (MSH-4 and PID-5 carry \T\ for "&"), a PV1, OBX it does not understand, a temperature in degF,
# an EtCO2 with the IEEE 11073 NaN value, and an ECG NA block with its sample-rate companion.
MDC_MESSAGE = "\r".join(
    [
        r"MSH|^~\&|MINDRAY_EGATEWAY^00A037EB0A2F0011^EUI-64|County OR \T\ Recovery|ORBRIDGE||"
        r"20261122083015.250+0800||ORU^R01^ORU_R01|MSG-000481|P|2.6|||AL|NE||UNICODE UTF-8|||"
        r"IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        r"PID|||PT-12345^^^County Hospital^PI||O\T\Brien^Mary^^^^^L||19700101|F",
        r"PV1||I|OR^2^1^COUNTY HOSPITAL",
        r"OBR|1|481^MINDRAY_EGATEWAY^00A037EB0A2F0011^EUI-64|481^MINDRAY_EGATEWAY^"
        r"00A037EB0A2F0011^EUI-64|182777000^monitoring of patient^SCT|||20261122083015+0800",
        r"OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||"
        r"00A037EB0A2F0011^BED_OR2^00A037EB0A2F0011^EUI-64",
        r"OBX|2|CWE|68220^MDC_TIME_SYNC_PROTOCOL^MDC|0.0.0.1|532224^MDC_TIME_SYNC_NONE^MDC|||||R",
        r"OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.2.1.147842|64|264864^MDC_DIM_BEAT_PER_MIN^MDC"
        r"|||||R|||20261122083014+0800",
        r"OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3.1.150456|97|262688^MDC_DIM_PERCENT^MDC"
        r"|||||R|||20261122083014+0800",
        r"OBX|5|NM|149530^MDC_PULS_OXIM_PULS_RATE^MDC|1.3.1.149530|65|"
        r"264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R",
        r"OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.4.1.150021|118|266016^MDC_DIM_MMHG^MDC"
        r"|||||R|||20261122082900+0800",
        r"OBX|7|NM|150022^MDC_PRESS_BLD_NONINV_DIA^MDC|1.4.1.150022|76|266016^MDC_DIM_MMHG^MDC"
        r"|||||R|||20261122082900+0800",
        r"OBX|8|NM|151562^MDC_RESP_RATE^MDC|1.5.1.151562|14|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R",
        r"OBX|9|NM|150344^MDC_TEMP^MDC|1.6.1.150344|98.6|266560^MDC_DIM_FAHR^MDC|||||R",
        r"OBX|10|NM|151708^MDC_AWAY_CO2_ET^MDC|1.7.1.151708|8388607|266016^MDC_DIM_MMHG^MDC|||||R",
        r"OBX|11|NM|188740^MDC_MASS_BODY_ACTUAL^MDC|1.8.1.188740|70|263875^MDC_DIM_KILO_G^MDC"
        r"|||||R",
        r"OBX|12|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.2.1.131330|" + ECG_SAMPLES + r"|"
        r"266418^MDC_DIM_MILLI_VOLT^MDC|||||R|||20261122083014.5+0800",
        r"OBX|13|NM|0^MDC_ATTR_SAMP_RATE^MDC|1.2.1.131330.1|250|264608^MDC_DIM_PER_SEC^MDC|||||R",
        r"OBX|14|NR|0^MDC_ATTR_DATA_RANGE^MDC|1.2.1.131330.2|-5^5|266418^MDC_DIM_MILLI_VOLT^MDC"
        r"|||||R",
    ]
)

# A vital-signs gateway in LOINC and UCUM (LF line ends, no OBX-18, no time zones)
LOINC_MESSAGE = "\n".join(
    [
        r"MSH|^~\&|VITALSGW|RURAL_CLINIC|ORBRIDGE|HUB|20261122093000||ORU^R01|GW7781|P|2.5.1",
        r"PID|1||MRN-0042^^^CLINIC^MR||Doe^Jane",
        r"OBR|1||GW7781|85353-1^Vital signs panel^LN|||20261122092955",
        r"OBX|1|NM|8867-4^Heart rate^LN||88|/min^^UCUM|||||F|||20261122092950",
        r"OBX|2|NM|59408-5^Oxygen saturation by Pulse oximetry^LN||95|%^^UCUM|||||F",
        r"OBX|3|NM|8480-6^Systolic blood pressure^LN||132|mm[Hg]^^UCUM|||||F",
        r"OBX|4|NM|8462-4^Diastolic blood pressure^LN||84|mm[Hg]^^UCUM|||||F",
        r"OBX|5|NM|9279-1^Respiratory rate^LN||18|/min^^UCUM|||||F",
        r"OBX|6|NM|8310-5^Body temperature^LN||37.2|Cel^^UCUM|||||F",
        r"OBX|7|ST|8867-4^Heart rate \T\ rhythm^LN||irregular||||||F",
        r"OBX|8|NM|29463-7^Body weight^LN||70|kg^^UCUM|||||F",
    ]
)


def oru(*obx: str, device: str = "SIM-1", control_id: str = "C-1", msh_type: str = "ORU^R01",
        obr_time: str = "20261122100000") -> str:  # fmt: skip
    return "\r".join(
        [
            rf"MSH|^~\&|{device}|OR|ORBRIDGE||20261122100000||{msh_type}|{control_id}|P|2.6",
            f"OBR|1|||182777000^monitoring of patient^SCT|||{obr_time}",
            *obx,
        ]
    )


HR_72 = "OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R"


def ecg_obx(samples: str = "0.1^0.2^0.3^0.2", rate: str = "500") -> list[str]:
    return [
        f"OBX|2|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.2|{samples}|266418^MDC_DIM_MILLI_VOLT^MDC"
        "|||||R|||20261122100000.0020",
        f"OBX|3|NM|0^MDC_ATTR_SAMP_RATE^MDC|1.2.1|{rate}|264608^MDC_DIM_PER_SEC^MDC|||||R",
    ]


# ---------------------------------------------------------------------------------------------
# parsing


def test_parse_monitor_message_in_mdc() -> None:
    received = int(ms(2026, 11, 22, 0, 30, 16))
    parsed = parse_oru(MDC_MESSAGE, received)
    assert parsed.control_id == "MSG-000481"
    assert parsed.sending_application == "MINDRAY_EGATEWAY"
    assert parsed.sending_facility == "County OR & Recovery"  # \T\ unescaped
    assert parsed.device_id == MONITOR
    assert parsed.version == "2.6"
    values = {n.kind: n.value for n in parsed.numerics}
    assert values == {"hr": 64, "spo2": 97, "pulse": 65, "nibp_sys": 118, "nibp_dia": 76,
                      "rr": 14, "temp": pytest.approx(37.0)}  # fmt: skip
    times = {n.kind: n.time_ms for n in parsed.numerics}
    assert times["hr"] == ms(2026, 11, 22, 8, 30, 14, tz=CST)
    assert times["nibp_sys"] == ms(2026, 11, 22, 8, 29, 0, tz=CST)
    assert times["pulse"] == ms(2026, 11, 22, 8, 30, 15, tz=CST)  # no OBX-14: OBR-7
    assert all(n.source == MONITOR for n in parsed.numerics)
    # MDS row (status X), time sync (CWE), EtCO2 NaN, body mass, data range: ignored
    assert parsed.ignored == 5
    [wave] = parsed.waveforms
    assert wave.kind == "ecg_ii"
    assert wave.rate_hz == 250
    assert wave.start_ms == ms(2026, 11, 22, 8, 30, 14, 500000, tz=CST)
    assert len(wave.samples) == 25 and wave.samples[11] == 1.25
    assert wave.seq == 0  # no ORBRIDGE_SEQ and no counter: 0


def test_parse_gateway_message_in_loinc() -> None:
    parsed = parse_oru(LOINC_MESSAGE, 0)
    assert parsed.device_id == "VITALSGW"  # no OBX-18: MSH-3
    assert {n.kind: n.value for n in parsed.numerics} == {
        "hr": 88, "spo2": 95, "nibp_sys": 132, "nibp_dia": 84, "rr": 18, "temp": 37.2
    }  # fmt: skip
    times = {n.kind: n.time_ms for n in parsed.numerics}
    assert times["hr"] == ms(2026, 11, 22, 9, 29, 50)  # no zone: UTC
    assert times["spo2"] == ms(2026, 11, 22, 9, 29, 55)  # OBR-7
    assert parsed.ignored == 2  # ST text, body weight
    assert parsed.waveforms == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20261122083015", ms(2026, 11, 22, 8, 30, 15)),
        ("20261122083015+0800", ms(2026, 11, 22, 0, 30, 15)),
        ("20261122083015.1234-0230", ms(2026, 11, 22, 11, 0, 15) + 123.4),
        ("20261122083015.5", ms(2026, 11, 22, 8, 30, 15) + 500),
        ("202611220830", ms(2026, 11, 22, 8, 30)),
        ("20261122", ms(2026, 11, 22)),
        ("2026", ms(2026, 1, 1)),
    ],
)
def test_hl7_timestamps(text: str, expected: float) -> None:
    assert parse_dtm(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["2026-11-22", "20261322", "20261122083015+2500", "", "now"])
def test_bad_hl7_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        parse_dtm(text)


def test_format_dtm_round_trips() -> None:
    for value in (1_795_317_940_123.0, 1_795_317_940_123.5, 0.0):
        assert parse_dtm(format_dtm(value)) == value


def test_observation_time_falls_back_to_obr_then_arrival() -> None:
    parsed = parse_oru(oru(HR_72, obr_time="20261122100005+0100"), 42)
    assert parsed.numerics[0].time_ms == ms(2026, 11, 22, 9, 0, 5)
    parsed = parse_oru(oru(HR_72, obr_time=""), 42)
    assert parsed.numerics[0].time_ms == 42


def test_alternate_identifier_and_partition_codes() -> None:
    msg = oru(
        # primary code unknown here; the alternate (OBX-3.4-6) is LOINC
        "OBX|1|NM|99HR^Pulse^99LOCAL^8867-4^Heart rate^LN||61|/min^^UCUM|||||F",
        # "partition::term": 2::19384 is 2 * 65536 + 19384 = 150456
        "OBX|2|NM|2::19384^^MDC|1.3|99|%^^UCUM|||||F",
        "OBX|3|NM|^MDC_RESP_RATE^MDC|1.5|12|/min^^UCUM|||||F",  # name only
        "OBX|4|NM|151708^MDC_AWAY_CO2_ET^MDC|1.7|5.2|kPa^^UCUM|||||F",
    )
    parsed = parse_oru(msg, 0)
    values = {n.kind: n.value for n in parsed.numerics}
    assert values["hr"] == 61
    assert values["spo2"] == 99
    assert values["rr"] == 12
    assert values["etco2"] == pytest.approx(39.0, abs=0.1)  # 5.2 kPa in mmHg


def test_waveform_companions_by_sub_id_and_microvolts() -> None:
    msg = oru(
        "OBX|1|NA|131330^MDC_ECG_ELEC_POTL_II^MDC|1.2.1.7|100^-250^1200|266419^MDC_DIM_MICRO_VOLT"
        "^MDC|||||R",
        "OBX|2|NA|150452^MDC_PULS_OXIM_PLETH^MDC|1.3.1.9|10^20^30|262656^MDC_DIM_DIMLESS^MDC|||||R",
        # companions after both waveforms: tied by OBX-4
        "OBX|3|NM|0^MDC_ATTR_SAMP_RATE^MDC|1.2.1.7.1|500|Hz^^UCUM|||||R",
        "OBX|4|NM|0^MDC_ATTR_SAMP_RATE^MDC|1.3.1.9.1|62.5|264640^MDC_DIM_HZ^MDC|||||R",
        "OBX|5|NM|0^ORBRIDGE_SEQ^99ORB|1.3.1.9.2|41||||||R",
    )
    parsed = parse_oru(msg, 1000, next_seq=lambda device, kind: 7)
    waves = {w.kind: w for w in parsed.waveforms}
    assert waves["ecg_ii"].samples == (0.1, -0.25, 1.2)  # uV -> mV
    assert waves["ecg_ii"].rate_hz == 500 and waves["ecg_ii"].seq == 7  # from next_seq
    assert waves["pleth"].rate_hz == 62.5 and waves["pleth"].seq == 41
    assert waves["pleth"].start_ms == ms(2026, 11, 22, 10)  # OBR-7


@pytest.mark.parametrize("sub_ids", [True, False])
def test_companions_of_unknown_waveforms_stay_with_them(sub_ids: bool) -> None:
    def sub(value: str) -> str:
        return value if sub_ids else ""

    msg = oru(
        f"OBX|1|NA|150452^MDC_PULS_OXIM_PLETH^MDC|{sub('1.3.1.9')}|10^20^30|262656^^MDC|||||R",
        f"OBX|2|NM|0^MDC_ATTR_SAMP_RATE^MDC|{sub('1.3.1.9.1')}|62.5|Hz|||||R",
        # ECG lead I is not read here: its rate (256 Hz) must not become the pleth's
        f"OBX|3|NA|131329^MDC_ECG_ELEC_POTL_I^MDC|{sub('1.1.1.1001')}|0.1^0.2|266418^^MDC|||||R",
        f"OBX|4|NM|0^MDC_ATTR_SAMP_RATE^MDC|{sub('1.1.1.1001.1')}|256|Hz|||||R",
        f"OBX|5|NM|0^ORBRIDGE_SEQ^99ORB|{sub('1.1.1.1001.2')}|77||||||R",
    )
    [pleth] = parse_oru(msg, 0).waveforms
    assert (pleth.rate_hz, pleth.seq) == (62.5, 0)


def test_unavailable_values_are_skipped_not_refused() -> None:
    msg = oru(
        HR_72,
        "OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3|8388607|262688^MDC_DIM_PERCENT^MDC|||||R",
        "OBX|3|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.3|||||||X",
        "OBX|4|NM|151562^MDC_RESP_RATE^MDC|1.5|400|264928^MDC_DIM_RESP_PER_MIN^MDC|||||X",
    )
    parsed = parse_oru(msg, 0)
    assert [n.kind for n in parsed.numerics] == ["hr"]
    assert parsed.ignored == 3


@pytest.mark.parametrize(
    ("message", "ack", "hl7_code", "reason"),
    [
        (oru(HR_72, msh_type="ADT^A01"), "AR", 200, "unsupported message type ADT^A01"),
        (oru(HR_72, msh_type="ORU^R30"), "AR", 201, "unsupported event ORU^R30"),
        (oru("OBX|1|NM||1.1|72|/min^^UCUM|||||R"), "AE", 101, "OBX 1: OBX-3"),
        (oru("OBX|1|NM|^^MDC|1.1|72|/min|||||R"), "AE", 101, "OBX-3 (observation identifier)"),
        (oru("OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1|fast|/min"), "AE", 102, "not a number"),
        (oru("OBX|1|NM|188740^MDC_MASS_BODY_ACTUAL^MDC||70|kg"), "AE", 207, "no usable"),
        (oru(), "AE", 101, "no OBX"),
        (oru(*ecg_obx()[:1]), "AE", 101, "no sample rate"),
        (oru(*ecg_obx(samples="0.1^^0.3")), "AE", 102, "sample 2"),
        (oru(*ecg_obx()[:1], "OBX|3|NM|0^MDC_ATTR_SAMP_RATE^MDC|1.2.1|3|ms"), "AE", 102, "unit"),
        (oru(HR_72.replace("||||R", "||||R|||2026-11-22")), "AE", 102, "OBX-14"),
        ("PID|||x\rOBX|1|NM|x", "AR", 100, "must begin with an MSH"),
        (oru(HR_72).replace("\rOBR", "\robr"), "AE", 100, "not a segment name"),
        (oru(HR_72, control_id=""), "AE", 101, "MSH-10"),
    ],
)
def test_refused_messages(message: str, ack: str, hl7_code: int, reason: str) -> None:
    with pytest.raises(Hl7Error) as info:
        parse_oru(message, 0)
    assert info.value.ack == ack
    assert info.value.hl7_code == hl7_code
    assert reason in info.value.message


def test_implausible_values_refuse_the_message_through_the_vitals_model() -> None:
    with pytest.raises(DomainError) as info:
        parse_oru(oru(HR_72.replace("|72|", "|500|")), 0)
    assert info.value.code == "invalid_vitals"
    assert info.value.message == "OBX 1: hr: 500.0 outside the plausible 0-350"
    with pytest.raises(DomainError, match=r"sample rate 300\.0 Hz"):
        parse_oru(oru(*ecg_obx(rate="300")), 0)
    with pytest.raises(DomainError, match=r"unit 'mm\[Hg\]'"):
        parse_oru(oru(HR_72.replace("264864^MDC_DIM_BEAT_PER_MIN", "266016^MDC_DIM_MMHG")), 0)


# ---------------------------------------------------------------------------------------------
# ACK and ORU building


def test_ack_swaps_sender_and_receiver_and_escapes_the_reason() -> None:
    ack = build_ack(MDC_MESSAGE, "AE", "hr: 500 | too | high ^ & ~ \\", hl7_code=207,
                    location="OBX^3^5", control_id="A1", time_ms=ms(2026, 11, 22))  # fmt: skip
    msh, msa, err = ack.rstrip("\r").split("\r")
    assert msh == (
        r"MSH|^~\&|ORBRIDGE||MINDRAY_EGATEWAY^00A037EB0A2F0011^EUI-64|County OR \T\ Recovery|"
        r"20261122000000.0000+0000||ACK^R01^ACK|A1|P|2.6"
    )
    escaped = r"hr: 500 \F\ too \F\ high \S\ \T\ \R\ \E" + "\\"
    assert msa == "MSA|AE|MSG-000481|" + escaped
    assert err == "ERR||OBX^3^5|207^Application internal error^HL70357|E||||" + escaped
    fields = ack_fields(ack)
    assert fields["text"] == "hr: 500 | too | high ^ & ~ \\"


def test_ack_accept_and_unparseable() -> None:
    ok = ack_fields(build_ack(LOINC_MESSAGE, "AA"))
    assert ok == {"code": "AA", "control_id": "GW7781", "text": "", "error_code": "",
                  "message_type": "ACK^R01^ACK"}  # fmt: skip
    assert "\rERR" not in build_ack(LOINC_MESSAGE, "AA")
    junk = build_ack("\x00\x01 not hl7 at all", "AR", "not an HL7 v2 message")
    assert ack_fields(junk)["code"] == "AR" and ack_fields(junk)["control_id"] == ""
    adt = ack_fields(build_ack(oru(HR_72, msh_type="ADT^A01"), "AR", "no"))
    assert adt["message_type"] == "ACK^A01^ACK"  # the trigger echoed


def test_long_reason_is_cut_without_breaking_escapes() -> None:
    ack = build_ack(LOINC_MESSAGE, "AE", "|" * 200)
    assert ack.split("\r")[1] == "MSA|AE|GW7781|" + "\\F\\" * 80
    assert ack_fields(ack)["text"] == "|" * 80


@pytest.mark.parametrize("style", ["mdc", "loinc"])
def test_build_oru_round_trips(style: str) -> None:
    t = 1_795_317_940_123
    numerics = [
        make_numeric(numeric_kind(key=key), value, unit, t - i, "SIM|1")
        for i, (key, value, unit) in enumerate(
            [("hr", 72, "/min"), ("spo2", 98, "%"), ("nibp_sys", 121, "mm[Hg]"),
             ("nibp_dia", 79, "mm[Hg]"), ("nibp_mean", 93, "mm[Hg]"), ("rr", 16, "/min"),
             ("temp", 36.85, "Cel"), ("etco2", 38, "mm[Hg]"), ("pulse", 71, "/min")]
        )
    ]  # fmt: skip
    ecg = make_waveform(waveform_kind(key="ecg_ii"), t + 0.5, 500, 1234,
                        [round(0.001 * i - 0.4, 3) for i in range(1000)], "SIM|1")  # fmt: skip
    pleth = make_waveform(waveform_kind(key="pleth"), t, 125, 9, [12.5, 40, -3], "SIM|1")
    message = build_oru("SIM|1", numerics, [ecg, pleth], "CTL|9", style)
    parsed = parse_oru(message, 0)
    assert parsed.control_id == "CTL|9" and parsed.device_id == "SIM|1"  # escaped and back
    assert parsed.numerics == numerics
    assert parsed.waveforms == [ecg, pleth]


# ---------------------------------------------------------------------------------------------
# the listener, over TCP


@dataclass
class Harness:
    listener: MllpListener
    batches: list[VitalsBatch] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.listener.port

    async def send(self, message: str) -> dict[str, str]:
        return ack_fields(await send_oru("127.0.0.1", self.port, message, ack_timeout=5))


Start = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def mllp() -> AsyncIterator[Start]:
    started: list[MllpListener] = []

    async def start(ingest: Callable[[VitalsBatch], Awaitable[Any]] | None = None,
                    **kw: Any) -> Harness:  # fmt: skip
        harness: Harness

        async def record(batch: VitalsBatch) -> None:
            harness.batches.append(batch)

        kw.setdefault("bindings", BINDINGS)
        listener = MllpListener(ingest or record, host="127.0.0.1", port=0, **kw)
        harness = Harness(listener)
        await listener.start()
        started.append(listener)
        return harness

    yield start
    for listener in started:
        await asyncio.wait_for(listener.close(), 5)


async def eventually(check: Callable[[], bool], within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not check():  # noqa: ASYNC110 - polls a counter; no event to wait on
            await asyncio.sleep(0.01)


async def closed_by_peer(reader: asyncio.StreamReader, within: float = 3.0) -> bool:
    """True when the peer closed (EOF or reset) within `within` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionError:
        return True
    return True


async def test_monitor_message_round_trip(mllp: Start) -> None:
    h = await mllp()
    before = int(time.time() * 1000)
    ack = await h.send(MDC_MESSAGE)
    assert ack["code"] == "AA" and ack["control_id"] == "MSG-000481"
    [batch] = h.batches
    assert batch.room == "or-2" and batch.via == "hl7"
    assert batch.received_ms >= before
    assert len(batch.numerics) == 7 and batch.waveforms[0].rate_hz == 250
    assert h.listener.messages_accepted == 1


async def test_gateway_message_round_trip_with_latin1(mllp: Start) -> None:
    h = await mllp()
    # MSH-4 with a non-UTF-8 byte (ISO 8859-1 "é"): decoded and echoed in the same charset
    message = LOINC_MESSAGE.replace("RURAL_CLINIC", "Clinique Sainte-Hélène")
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(VT + message.encode("latin-1") + FS + b"\r")
    frame = await asyncio.wait_for(read_frame(reader, None, None), 5)
    assert frame is not None
    ack = frame[0].decode("latin-1")
    assert ack_fields(ack)["code"] == "AA"
    assert "|Clinique Sainte-Hélène|" in ack  # MSH-6 of the ACK
    writer.close()
    assert h.batches[0].room == "or-7"
    assert {n.kind for n in h.batches[0].numerics} == {"hr", "spo2", "nibp_sys", "nibp_dia",
                                                       "rr", "temp"}  # fmt: skip


@pytest.mark.parametrize("style", ["mdc", "loinc"])
async def test_synthetic_oru_round_trip_keeps_waveform_sequence_and_rate(
    mllp: Start, style: str
) -> None:
    h = await mllp()
    t = 1_795_317_940_000
    kind = waveform_kind(key="ecg_ii")
    assert kind is not None
    async with MllpClient("127.0.0.1", h.port) as client:
        for seq in range(3):
            wave = make_waveform(kind, t + seq * 500, 500, seq, [0.01 * i for i in range(250)],
                                 "SIM-1")  # fmt: skip
            hr = make_numeric(numeric_kind(key="hr"), 70 + seq, None, t, "SIM-1")
            ack = ack_fields(await client.send(build_oru("SIM-1", [hr], [wave], f"S{seq}", style)))
            assert ack["code"] == "AA" and ack["control_id"] == f"S{seq}"
    waves = [b.waveforms[0] for b in h.batches]
    assert [w.seq for w in waves] == [0, 1, 2]
    assert [w.start_ms for w in waves] == [t, t + 500, t + 1000]
    assert all(w.rate_hz == 500 and len(w.samples) == 250 for w in waves)
    assert [b.numerics[0].value for b in h.batches] == [70, 71, 72]
    assert {b.room for b in h.batches} == {"or-1"}


async def test_listener_numbers_waveforms_without_a_sequence(mllp: Start) -> None:
    h = await mllp()
    async with MllpClient("127.0.0.1", h.port) as client:
        assert ack_fields(await client.send(oru(*ecg_obx(), control_id="1")))["code"] == "AA"
        assert ack_fields(await client.send(oru(*ecg_obx(), control_id="2")))["code"] == "AA"
        refused = oru(HR_72.replace("|72|", "|999|"), *ecg_obx(), control_id="3")
        assert ack_fields(await client.send(refused))["code"] == "AE"
        assert ack_fields(await client.send(oru(*ecg_obx(), control_id="4")))["code"] == "AA"
    assert [b.waveforms[0].seq for b in h.batches] == [0, 1, 2]  # a refused batch takes none


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        (oru(HR_72, device="UNKNOWN-MON"), "AE", "device UNKNOWN-MON is not bound to a room"),
        (oru(HR_72.replace("|72|", "|500|")), "AE", "OBX 1: hr: 500.0 outside the plausible"),
        (oru(HR_72, msh_type="ADT^A01"), "AR", "unsupported message type ADT^A01"),
        (oru("OBX|1|NM||1.1|72"), "AE", "OBX 1: OBX-3 (observation identifier) is missing"),
        (oru("OBX|1|NM|188740^MDC_MASS_BODY_ACTUAL^MDC||70|kg"), "AE", "no usable observations"),
    ],
)
async def test_refusals_are_acknowledged_with_the_reason(
    mllp: Start, message: str, code: str, reason: str
) -> None:
    h = await mllp()
    ack = await h.send(message)
    assert ack["code"] == code
    assert ack["control_id"] == "C-1"
    assert ack["text"].startswith(reason[:80])
    assert ack["error_code"]
    assert h.batches == []
    assert h.listener.messages_rejected == 1


async def test_default_room_and_ingest_errors(mllp: Start) -> None:
    seen: list[VitalsBatch] = []

    async def ingest(batch: VitalsBatch) -> dict[str, Any]:
        seen.append(batch)
        if batch.numerics[0].value == 73:
            raise DomainError("invalid_vitals", "room or-9 is closed")
        if batch.numerics[0].value == 74:
            raise RuntimeError("secret internals")
        return {"numerics": 1}

    h = await mllp(ingest, bindings={}, default_room="or-9")
    assert (await h.send(oru(HR_72, device="ANY")))["code"] == "AA"
    assert seen[0].room == "or-9"
    refused = await h.send(oru(HR_72.replace("|72|", "|73|"), device="ANY", control_id="2"))
    assert refused == {**refused, "code": "AE", "text": "room or-9 is closed"}
    broken = await h.send(oru(HR_72.replace("|72|", "|74|"), device="ANY", control_id="3"))
    assert broken["code"] == "AE" and broken["text"] == "internal error"


async def test_garbage_around_frames_is_skipped(mllp: Start) -> None:
    h = await mllp()
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    first = oru(HR_72, control_id="G1").encode()
    second = oru(HR_72, control_id="G2").encode()
    # noise, a frame, CRLF noise, a frame begun and abandoned, a frame ended by FS alone
    writer.write(b"\x00\r\nHELLO" + VT + first + FS + b"\r\r\n" + VT + b"MSH|broken" + VT
                 + second + FS)  # fmt: skip
    acks = [await asyncio.wait_for(read_frame(reader, None, None), 5) for _ in range(2)]
    assert [ack_fields(f[0].decode())["control_id"] for f in acks if f] == ["G1", "G2"]
    assert h.listener.garbage_bytes == 8 + 2 + 11
    writer.close()


async def test_unparseable_frame_gets_ar_and_the_connection_stays(mllp: Start) -> None:
    h = await mllp()
    async with MllpClient("127.0.0.1", h.port) as client:
        junk = ack_fields(await client.send("this is not HL7"))
        assert junk["code"] == "AR" and junk["control_id"] == ""
        assert ack_fields(await client.send(oru(HR_72)))["code"] == "AA"


async def test_resent_message_is_acknowledged_but_ingested_once(mllp: Start) -> None:
    h = await mllp()
    async with MllpClient("127.0.0.1", h.port) as client:
        for _ in range(2):
            assert ack_fields(await client.send(MDC_MESSAGE))["code"] == "AA"
    assert len(h.batches) == 1
    assert h.listener.messages_duplicate == 1


async def test_endless_frame_is_cut_while_another_client_is_served(mllp: Start) -> None:
    h = await mllp(read_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    writer.write(VT + oru(HR_72).encode()[:40])  # never ends
    await writer.drain()
    started = time.monotonic()
    slow = asyncio.create_task(closed_by_peer(reader))
    other = await h.send(oru(HR_72, control_id="OTHER"))  # meanwhile, on another connection
    assert other["code"] == "AA" and other["control_id"] == "OTHER"
    assert not slow.done()
    assert await slow
    assert 0.25 <= time.monotonic() - started < 3
    assert h.listener.frames_timed_out == 1
    writer.close()


async def test_oversized_frame_closes_only_that_connection(mllp: Start) -> None:
    h = await mllp(max_message_bytes=4096)
    async with MllpClient("127.0.0.1", h.port) as steady:
        assert ack_fields(await steady.send(oru(HR_72, control_id="1")))["code"] == "AA"
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
        writer.write(VT + b"MSH|" + b"x" * 20_000 + FS + b"\r")
        assert await closed_by_peer(reader)
        await eventually(lambda: h.listener.frames_oversized == 1)
        assert ack_fields(await steady.send(oru(HR_72, control_id="2")))["code"] == "AA"
        writer.close()
    # a frame just under the bound still passes
    big = oru(*ecg_obx(samples="^".join(["0.123456"] * 400)))
    assert len(big) < 4096
    assert (await h.send(big))["code"] == "AA"


async def test_concurrent_clients(mllp: Start) -> None:
    bindings = {f"MON-{i}": f"or-{i}" for i in range(8)}
    h = await mllp(bindings=bindings)

    async def monitor(i: int) -> list[str]:
        async with MllpClient("127.0.0.1", h.port) as client:
            return [
                ack_fields(await client.send(oru(HR_72, *ecg_obx(), device=f"MON-{i}",
                                                 control_id=f"{i}-{n}")))["code"]
                for n in range(5)
            ]  # fmt: skip

    results = await asyncio.gather(*(monitor(i) for i in range(8)))
    assert results == [["AA"] * 5] * 8
    assert len(h.batches) == 40
    for i in range(8):
        mine = [b for b in h.batches if b.room == f"or-{i}"]
        assert [b.waveforms[0].seq for b in mine] == [0, 1, 2, 3, 4]
    await eventually(lambda: h.listener.connections_active == 0)
    assert h.listener.connections_total == 8


async def test_idle_connection_is_closed_and_close_is_prompt(mllp: Start) -> None:
    h = await mllp(idle_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
    assert await closed_by_peer(reader)
    assert h.listener.connections_idle_closed == 1
    writer.close()
    # a listener with a connection mid-frame still closes at once
    h2 = await mllp()
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", h2.port)
    writer2.write(VT + b"MSH|^~\\&|")
    await eventually(lambda: h2.listener.connections_active == 1)
    await asyncio.wait_for(h2.listener.close(), 2)
    assert await closed_by_peer(reader2)
    writer2.close()


def test_bindings_from_the_command_line() -> None:
    assert parse_binding(" MON-1 = or-1 ") == ("MON-1", "or-1")
    assert parse_bindings(["A=or-1", "B=or-2"]) == {"A": "or-1", "B": "or-2"}
    assert parse_bindings(None) == {}
    for bad in ("MON-1", "=or-1", "MON-1="):
        with pytest.raises(ValueError):
            parse_binding(bad)


async def test_serve_with_an_mllp_port_routes_monitors_to_rooms(start_node: Any) -> None:
    """The listener as `orbridge serve --mllp-port --mllp-bind` runs it: ORU in, `vitals` out."""
    from orbridge.rooms.roles import Role
    from tests.support import free_port

    port = free_port()
    node = await start_node(mllp_port=port, mllp_bindings={"monitor-7": "or-1"})
    expert = await node.client("or-1", Role.EXPERT)
    hr = Numeric("hr", 64.0, 1_795_000_000_000, "monitor-7")
    ack = await send_oru("127.0.0.1", port, build_oru("monitor-7", [hr], [], "MSG00042"))
    assert ack_fields(ack)["code"] == "AA"
    got = await expert.next_event("vitals")
    assert got["via"] == "hl7" and got["numerics"][0]["value"] == 64.0
    ack = await send_oru("127.0.0.1", port, build_oru("monitor-9", [hr], [], "MSG00043"))
    assert ack_fields(ack)["code"] == "AE"  # not bound to a room
    assert node.node.mllp is not None
    node.node.metrics.set_mllp(node.node.mllp.stats())
    text = (await node.node.metrics.render(node.node.presence, 1)).decode()
    assert 'orbridge_mllp{what="messages_accepted"} 1.0' in text
