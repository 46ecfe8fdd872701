"""FHIR R4 vitals ingest: parsing and normalization, then the HTTP endpoint end to end."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orbridge.rooms import tokens
from orbridge.rooms.roles import Role
from orbridge.signaling.app import create_app
from orbridge.signaling.cli.client import RoomClient
from orbridge.signaling.ingest.fhir import FhirError, parse_observations
from orbridge.signaling.node import NODE
from orbridge.signaling.settings import Settings
from orbridge.signaling.web.fhir import MAX_BODY_BYTES, add_fhir_routes
from tests.support import SECRET, free_port

API_KEY = "fhir-gateway-key-0123456789"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC = "urn:oid:2.16.840.1.113883.6.24"
VITAL_SIGNS = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs", "display": "Vital Signs"}]}]  # fmt: skip
WHEN = "2026-11-03T10:15:02.250+08:00"
WHEN_MS = 1_793_672_102_250


def observation(code: str, value: float, unit: str, display: str = "", **extra: Any) -> dict:
    """A vital-signs profile Observation as a monitor gateway sends it."""
    return {
        "resourceType": "Observation",
        "id": f"obs-{code}",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "status": "final",
        "category": VITAL_SIGNS,
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": display or code}],
            "text": display or code,
        },
        "subject": {"reference": "Patient/anon-7"},
        "effectiveDateTime": WHEN,
        "device": {"reference": "Device/monitor-1", "display": "Bedside monitor OR 1"},
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
        **extra,
    }


HR = observation("8867-4", 72, "/min", "Heart rate")
SPO2 = observation("59408-5", 97, "%", "Oxygen saturation in Arterial blood by Pulse oximetry")
TEMP = observation("8310-5", 36.8, "Cel", "Body temperature")
BP = {
    "resourceType": "Observation",
    "status": "final",
    "category": VITAL_SIGNS,
    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
    "subject": {"reference": "Patient/anon-7"},
    "effectiveDateTime": "2026-11-03T02:15:00Z",
    "performer": [{"reference": "Device/nibp-2"}],
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic"}]},
         "valueQuantity": {"value": 118, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic"}]},
         "valueQuantity": {"value": 76, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    ],
}  # fmt: skip


def ecg_observation(data: list[int], period: float = 2, code: str = "131328") -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "procedure"}]}],
        "code": {"coding": [{"system": MDC, "code": code, "display": "MDC_ECG_ELEC_POTL"}]},
        "effectiveDateTime": WHEN,
        "device": {"reference": "Device/monitor-1"},
        "valueSampledData": {
            "origin": {"value": -0.5, "unit": "mV", "system": UCUM, "code": "mV"},
            "period": period, "factor": 0.005, "dimensions": 1,
            "data": " ".join(str(x) for x in data),
        },
    }  # fmt: skip


def bundle(*resources: dict, kind: str = "transaction") -> dict:
    entries = []
    for i, res in enumerate(resources):
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-{i:012d}",
                                 "resource": res}  # fmt: skip
        if kind in ("transaction", "batch"):
            entry["request"] = {"method": "POST", "url": res["resourceType"]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def without(resource: dict, key: str) -> dict:
    return {k: v for k, v in resource.items() if k != key}


# -- parsing and normalization ---------------------------------------------------------------


def test_heart_rate_spo2_temperature() -> None:
    for res, kind, value in ((HR, "hr", 72.0), (SPO2, "spo2", 97.0), (TEMP, "temp", 36.8)):
        parsed = parse_observations(res, "or-1", received_ms=1)
        (n,) = parsed.batch.numerics
        assert (n.kind, n.value, n.time_ms, n.source) == (kind, value, WHEN_MS, "monitor-1")
        assert parsed.batch.via == "fhir" and parsed.batch.room == "or-1"


def test_blood_pressure_panel_components() -> None:
    parsed = parse_observations(BP, "or-1")
    got = [(n.kind, n.value, n.source) for n in parsed.batch.numerics]
    assert got == [("nibp_sys", 118.0, "nibp-2"), ("nibp_dia", 76.0, "nibp-2")]
    assert parsed.batch.numerics[0].time_ms == 1_793_672_100_000


@pytest.mark.parametrize(
    "performer",
    [
        {"reference": "Practitioner/dr-zhang", "display": "Dr Zhang San"},
        {"display": "Zhang San (nurse)"},
        {"reference": "Patient/anon-7"},
        {"identifier": {"value": "110105199001011234"}},  # a person's ID number, untyped
        {"reference": "Device/has spaces and a <script>"},
    ],
)
def test_a_performer_that_is_not_a_device_is_never_shown_as_the_source(performer: dict) -> None:
    res = without(copy.deepcopy(HR), "device")
    res["performer"] = [performer]
    (n,) = parse_observations(res, "or-1").batch.numerics
    assert n.source == "fhir"


def test_a_device_performer_names_the_source() -> None:
    res = without(copy.deepcopy(HR), "device")
    res["performer"] = [{"display": "Dr Li"}, {"type": "Device", "identifier": {"value": "gw-3"}}]
    (n,) = parse_observations(res, "or-1").batch.numerics
    assert n.source == "gw-3"


def test_other_codings_and_units_devices_use() -> None:
    mdc_hr = copy.deepcopy(HR)
    mdc_hr["code"] = {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "147842"}]}
    spo2_old = observation("2708-6", 96, "%")
    fahrenheit = observation("8310-5", 98.6, "[degF]")
    no_time = without(HR, "effectiveDateTime")
    parsed = parse_observations(bundle(mdc_hr, spo2_old, fahrenheit, no_time), "or-1",
                                received_ms=123)  # fmt: skip
    got = [(n.kind, n.value, n.time_ms) for n in parsed.batch.numerics]
    assert got == [("hr", 72.0, WHEN_MS), ("spo2", 96.0, WHEN_MS), ("temp", 37.0, WHEN_MS),
                   ("hr", 72.0, 123)]  # fmt: skip


def test_ecg_sampled_data() -> None:
    data = list(range(-100, 300))  # 400 samples, 0.8 s at 500 Hz
    parsed = parse_observations(ecg_observation(data), "or-1")
    (w,) = parsed.batch.waveforms
    assert (w.kind, w.rate_hz, w.start_ms, w.source) == ("ecg_ii", 500.0, WHEN_MS, "monitor-1")
    assert len(w.samples) == 400 and parsed.samples == 400
    assert w.samples[0] == pytest.approx(-0.5 + 0.005 * -100)  # origin + factor * data
    assert w.samples[-1] == pytest.approx(-0.5 + 0.005 * 299)


def test_long_ecg_is_split_into_chunks() -> None:
    parsed = parse_observations(ecg_observation([0] * 5000, period=4, code="131330"), "or-1")
    waves = parsed.batch.waveforms
    assert [len(w.samples) for w in waves] == [2000, 2000, 1000]
    assert [w.start_ms for w in waves] == [WHEN_MS, WHEN_MS + 8000, WHEN_MS + 16000]
    assert {w.rate_hz for w in waves} == {250.0}


def test_bundle_skips_what_it_does_not_display() -> None:
    weight = observation("29463-7", 70, "kg", "Body weight")
    wrong = dict(HR, status="entered-in-error")
    device = {"resourceType": "Device", "id": "monitor-1"}
    parsed = parse_observations(bundle(HR, SPO2, BP, weight, wrong, device), "or-1")
    assert [n.kind for n in parsed.batch.numerics] == ["hr", "spo2", "nibp_sys", "nibp_dia"]
    reasons = {s.path: s.message for s in parsed.skipped}
    assert set(reasons) == {f"Bundle.entry[{i}].resource" for i in (3, 4, 5)}
    assert "29463-7" in reasons["Bundle.entry[3].resource"]
    assert "entered-in-error" in reasons["Bundle.entry[4].resource"]


@pytest.mark.parametrize(
    ("body", "path", "words"),
    [
        (dict(HR, resourceType="Patient"), "resourceType", "Patient"),
        (without(HR, "code"), "Observation.code", "required"),
        (without(HR, "status"), "Observation.status", "required"),
        (dict(HR, status="done"), "Observation.status", "not an Observation status"),
        (observation("8867-4", 72, "mm[Hg]"), "Observation.valueQuantity", "expected /min"),
        (observation("8867-4", 900, "/min"), "Observation.valueQuantity", "plausible"),
        (observation("59408-5", 104, "%"), "Observation.valueQuantity", "plausible"),
        (
            dict(
                HR,
                valueQuantity={
                    "value": 72,
                    "unit": "bpm",
                    "system": "http://snomed.info/sct",
                    "code": "258983007",
                },
            ),
            "Observation.valueQuantity",
            "UCUM",
        ),
        (dict(HR, valueQuantity={"value": "fast"}), "Observation.valueQuantity.value", ""),
        (dict(HR, effectiveDateTime="2026-11-03"), "Observation.effective", "time of day"),
        (dict(HR, colour="red"), "Observation.colour", "Extra"),
        (ecg_observation([1, 2, "E", 4]), "Observation.valueSampledData", "gap"),
        (ecg_observation([1, 2, 3], period=3), "Observation.valueSampledData", "333"),
        (ecg_observation([1, 2, 5000]), "Observation.valueSampledData", "-10..10"),
        (ecg_observation([0] * 60_001), "Observation.valueSampledData", "at most 60000"),
        (bundle(HR, without(SPO2, "status")), "Bundle.entry[1].resource.status", "required"),
        (bundle(HR, kind="searchset"), "Bundle.type", "unsupported"),
        (bundle(observation("29463-7", 70, "kg")), "Bundle.entry[0].resource", "29463-7"),
        ([HR], "", "JSON object"),
    ],
)
def test_invalid_resources_say_where(body: Any, path: str, words: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_observations(body, "or-1")
    details = {i.path: i.message for i in caught.value.issues}
    assert path in details, details
    assert words in details[path] or words in caught.value.message, details


# -- HTTP ------------------------------------------------------------------------------------


class Server:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url
        self.node = app[NODE]
        self.http = aiohttp.ClientSession()
        self.clients: list[RoomClient] = []

    def token(self, room: str, role: Role, identity: str | None = None) -> str:
        return tokens.mint(SECRET, room=room, role=role, name="Tester", identity=identity)

    async def viewer(self, room: str = "or-1") -> RoomClient:
        client = RoomClient(self.url, self.token(room, Role.EXPERT, "dr-wang"))
        self.clients.append(client)
        await client.connect()
        await client.join()
        return client

    async def post(self, body: Any, room: str = "or-1", token: str | None = None,
                   content_type: str = "application/fhir+json",
                   headers: dict[str, str] | None = None) -> tuple[int, dict]:  # fmt: skip
        if token is None:
            token = self.token(room, Role.DEVICE, "monitor-1")
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"}
                                                 if token else {}), **(headers or {})}  # fmt: skip
        async with self.http.post(f"{self.url}/api/rooms/{room}/observations", data=data,
                                  headers=hdrs) as resp:  # fmt: skip
            return resp.status, await resp.json()


@pytest.fixture
async def server(tmp_path: Any) -> AsyncIterator[Server]:
    port = free_port()
    settings = Settings(port=port, secret=SECRET, data_dir=tmp_path, presence_ttl=3.0,
                        heartbeat_interval=0.5, api_keys=[API_KEY])  # fmt: skip
    app = create_app(settings)
    add_fhir_routes(app)
    add_fhir_routes(app)  # idempotent: app.py may already add them
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    srv = Server(app, f"http://127.0.0.1:{port}")
    try:
        yield srv
    finally:
        for client in srv.clients:
            await client.close()
        await srv.http.close()
        await runner.cleanup()


async def test_a_bundle_reaches_the_room_as_vitals(server: Server) -> None:
    viewer = await server.viewer()
    status, body = await server.post(bundle(HR, SPO2, BP, TEMP, ecg_observation([10] * 250)))
    assert status == 200, body
    assert body["accepted"] == {"numerics": 5, "waveforms": 1, "samples": 250}
    assert body["skipped"] == [] and body["alarms"] == []
    got = await viewer.next_event("vitals")
    assert got["via"] == "fhir"
    assert [(n["kind"], n["value"], n["loinc"]) for n in got["numerics"]] == [
        ("hr", 72.0, "8867-4"), ("spo2", 97.0, "59408-5"), ("nibp_sys", 118.0, "8480-6"),
        ("nibp_dia", 76.0, "8462-4"), ("temp", 36.8, "8310-5"),
    ]  # fmt: skip
    (wave,) = got["waveforms"]
    assert (wave["kind"], wave["rate_hz"], wave["seq"], wave["unit"]) == ("ecg_ii", 500, 0, "mV")
    assert wave["samples"][0] == pytest.approx(-0.45) and wave["source"] == "monitor-1"
    # The next posting of the same stream continues its sequence.
    status, _ = await server.post(ecg_observation([20] * 250))
    assert status == 200
    assert (await viewer.next_event("vitals"))["waveforms"][0]["seq"] == 1


async def test_a_low_spo2_raises_the_alarm(server: Server) -> None:
    viewer = await server.viewer()
    status, body = await server.post(observation("59408-5", 84, "%"))
    assert status == 200 and body["alarms"][0]["event"] == "raised"
    alarm = await viewer.next_event("alarm_raised")
    assert (alarm["kind"], alarm["condition"], alarm["value"]) == ("spo2", "low", 84.0)


async def test_invalid_fhir_is_400_with_details_and_an_operation_outcome(server: Server) -> None:
    viewer = await server.viewer()
    status, body = await server.post(bundle(HR, observation("8867-4", 900, "/min")))
    assert status == 400
    assert body["error"]["code"] == "invalid_fhir"
    assert body["error"]["details"] == [
        {"path": "Bundle.entry[1].resource.valueQuantity",
         "message": "hr: 900.0 outside the plausible 0-350"},
    ]  # fmt: skip
    outcome = body["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.valueQuantity"]
    # All or nothing: the valid heart rate beside it was not shown either.
    status, body = await server.post(without(HR, "status"))
    assert status == 400 and body["error"]["details"][0]["path"] == "Observation.status"
    status, body = await server.post(dict(HR, resourceType="Patient"))
    assert status == 400 and body["error"]["details"][0]["path"] == "resourceType"
    assert viewer.pending("vitals") == []


async def test_malformed_json(server: Server) -> None:
    status, body = await server.post(b'{"resourceType": "Observation", "status": ')
    assert status == 400 and body["error"]["code"] == "invalid_fhir"
    assert "line 1" in body["error"]["details"][0]["message"]
    status, body = await server.post(b"\xff\xfe not utf-8 \xc3")
    assert status == 400 and body["error"]["code"] == "invalid_fhir"


async def test_auth(server: Server) -> None:
    status, body = await server.post(HR, token="")
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await server.post(HR, token="not-a-token")
    assert (status, body["error"]["code"]) == (401, "token_invalid")
    other = tokens.mint("another-secret-0123456789-abcdefghij", room="or-1", role=Role.DEVICE,
                        name="Monitor")  # fmt: skip
    assert (await server.post(HR, token=other))[0] == 401
    for role in (Role.EXPERT, Role.TRAINEE):  # may see vitals, may not publish them
        status, body = await server.post(HR, token=server.token("or-1", role))
        assert (status, body["error"]["code"]) == (403, "forbidden")
        assert body["outcome"]["issue"][0]["code"] == "security"
    status, body = await server.post(HR, token=server.token("or-2", Role.DEVICE))
    assert (status, body["error"]["code"]) == (403, "token_wrong_room")
    for role in (Role.SURGEON, Role.MODERATOR):
        assert (await server.post(HR, token=server.token("or-1", role)))[0] == 200
    assert (await server.post(HR, room="any-room", token=API_KEY))[0] == 200
    status, _ = await server.post(HR, token="", headers={"X-API-Key": API_KEY})
    assert status == 200


async def test_content_type_and_size(server: Server) -> None:
    status, body = await server.post(HR, content_type="text/plain")
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")
    status, _ = await server.post(HR, content_type="application/json; charset=utf-8")
    assert status == 200
    # A minute of ECG (~130 KB) is validated off the event loop and arrives in 2000-sample chunks.
    status, body = await server.post(ecg_observation([i % 200 for i in range(30_000)]))
    assert status == 200 and body["accepted"] == {"numerics": 0, "waveforms": 15, "samples": 30_000}
    big = ecg_observation([1] * 10)
    big["valueSampledData"]["data"] = "1 " * (MAX_BODY_BYTES // 2)
    status, body = await server.post(big)
    assert (status, body["error"]["code"]) == (413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"resourceType": "Observation", "note": [{"text": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}]}'

    token = server.token("or-1", Role.DEVICE)
    async with server.http.post(
        f"{server.url}/api/rooms/or-1/observations", data=chunks(),
        headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"},
    ) as resp:  # fmt: skip
        assert resp.status == 413


async def test_bad_room_name(server: Server) -> None:
    status, body = await server.post(HR, room="bad%20room", token=API_KEY)
    assert (status, body["error"]["code"]) == (400, "invalid_room")
