"""FHIR R4 vital signs into the vitals model: an Observation or a Bundle -> one `VitalsBatch`.

The body of `POST /api/rooms/{room}/observations` (the route is signaling/web/fhir.py) is one
Observation or a Bundle (`transaction`, `batch` or `collection`) of them, as a monitor gateway
or an EHR integration engine sends vital signs:

* numerics: the vital-signs profile. A LOINC (or IEEE 11073 MDC) `code`, `valueQuantity` in
  UCUM, `effectiveDateTime` (or `effectiveInstant` / `effectivePeriod.start`), and
  `device` (else a `performer` that is a Device: never a person, never a `display`) naming
  the source. Components count too: the blood pressure
  panel 85354-9 carries 8480-6 systolic, 8462-4 diastolic (and 8478-0 mean).
* waveforms: `valueSampledData` coded with MDC 131328/131330 (ECG, system
  `urn:oid:2.16.840.1.113883.6.24` or `urn:iso:std:iso:11073:10101`) or 150452 (pleth);
  sample i is `origin + factor * data[i]`, `period` ms apart, from `effective[x]`.

Everything is validated with fhir.resources (pydantic v2, the R4B models, R4-compatible for
Observation) and then with the normalized model (`rooms/vitals/model.py`: codes, units, plausible
ranges) into one `VitalsBatch(via="fhir")` for the vitals hub. A request is all or nothing:
one invalid Observation refuses the whole body (a half-applied bundle would show a clinician
some of a panel). Observations we do not display (other codes, `entered-in-error`, no value)
are skipped and listed in the answer, not refused; a body with nothing to display is refused.
FHIR has no sequence number: `number_waveforms` gives each waveform stream its own.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from orbridge.rooms.errors import DomainError
from orbridge.rooms.vitals.model import (
    MAX_SAMPLES,
    NumericKind,
    VitalsBatch,
    Waveform,
    make_numeric,
    make_waveform,
    numeric_kind,
    waveform_kind,
)

__all__ = [
    "FhirError",
    "Issue",
    "Parsed",
    "number_waveforms",
    "parse_observations",
]

MAX_WAVE_SAMPLES = 60_000  # per request: 60 s of ECG at 1 kHz, 2 min at 500 Hz
MAX_ISSUES = 50  # details listed in one answer
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MDC_SYSTEMS = {"urn:oid:2.16.840.1.113883.6.24", "urn:iso:std:iso:11073:10101"}
BUNDLE_TYPES = {"transaction", "batch", "collection"}
FHIR_STATUSES = {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                 "entered-in-error", "unknown"}  # fmt: skip
SHOWN_STATUSES = {"preliminary", "final", "amended", "corrected"}  # a measurement to display
MAX_SEQ_STREAMS = 10_000


@dataclass(frozen=True, slots=True)
class Issue:
    path: str  # FHIRPath-like: Bundle.entry[2].resource.valueQuantity.unit
    message: str
    code: str = "invalid"  # OperationOutcome issue type: invalid, required, structure, value...

    def public(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class FhirError(Exception):
    def __init__(self, message: str, issues: list[Issue]) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues


@dataclass(slots=True)
class Parsed:
    batch: VitalsBatch
    skipped: list[Issue]
    samples: int


# -- helpers ---------------------------------------------------------------------------------


def _pydantic_issues(exc: ValidationError, prefix: str) -> list[Issue]:
    issues = []
    for err in exc.errors(include_input=False, include_url=False):
        path = prefix
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part not in ("resource_type",):
                path += f".{part}"
            else:
                path += ".resourceType"
        kind = str(err.get("type", ""))
        code = "value"
        if "missing" in kind:
            code = "required"
        elif kind in ("extra_forbidden", "model_type"):
            code = "structure"
        message = " ".join(str(err["msg"]).split())  # some messages span indented lines
        if kind == "string_pattern_mismatch":  # FHIR strings: the pattern has raw \r\n\t
            pattern = (err.get("ctx") or {}).get("pattern", "")
            message = f"does not match the FHIR pattern {pattern!r} (empty?)"
        issues.append(Issue(path, message[:300], code))
    return issues


def _codes(concept: Any) -> list[tuple[str, str]]:
    if concept is None:
        return []
    return [(c.system or "", c.code or "") for c in concept.coding or () if c.code]


def _numeric_kind(concept: Any) -> NumericKind | None:
    for system, code in _codes(concept):
        kind = None
        if system == LOINC:
            kind = numeric_kind(loinc=code)
        elif system in MDC_SYSTEMS and code.isdigit():
            kind = numeric_kind(mdc=int(code))
        if kind is not None:
            return kind
    return None


def _ms(value: Any) -> int | None:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return None  # FHIR requires a zone with a time of day
        return int(value.timestamp() * 1000)
    return None


def _effective_ms(obs: Observation, path: str, issues: list[Issue]) -> int | None:
    raw = obs.effectiveDateTime or obs.effectiveInstant
    if raw is None and obs.effectivePeriod is not None:
        raw = obs.effectivePeriod.start
    if raw is None:
        return None  # no time given: the arrival time stands in
    ms = _ms(raw)
    if ms is None:
        what = "a date only" if isinstance(raw, date) and not isinstance(raw, datetime) else raw
        issues.append(Issue(f"{path}.effective", f"needs a time of day and zone, got {what}"))
    return ms


_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _device_name(ref: Any, *, device_only: bool) -> str:
    """A device's id from a Reference: `Device/monitor-1` -> `monitor-1`, or its identifier.
    Never its `display` (free text: a performer's display is often a person's name), and with
    `device_only` nothing but a Device reference (a Practitioner or Patient is not a source)."""
    if ref is None:
        return ""
    name = ""
    if ref.reference:
        reference = str(ref.reference).rstrip("/")
        if device_only and not reference.startswith("Device/"):
            return ""
        name = reference.replace(":", "/").rsplit("/", 1)[-1]
    elif ref.identifier is not None and ref.identifier.value:
        if device_only and (ref.type or "") != "Device":
            return ""
        name = str(ref.identifier.value)
    return name if _SOURCE_RE.match(name) else ""


def _source(obs: Observation) -> str:
    name = _device_name(obs.device, device_only=False)
    for performer in obs.performer or ():
        name = name or _device_name(performer, device_only=True)
    return name or "fhir"


def _quantity(q: Any, kind: NumericKind) -> tuple[float, str | None]:
    if q.value is None:
        raise DomainError("invalid_vitals", "valueQuantity has no value")
    if q.comparator is not None:
        raise DomainError("invalid_vitals", f"a value {q.comparator} {q.value} is not a reading")
    if q.system is not None and q.system != UCUM:
        raise DomainError("invalid_vitals", f"unit system {q.system!r}: use UCUM ({UCUM})")
    value, unit = float(q.value), q.code or q.unit
    if kind.key == "temp" and unit in ("[degF]", "degF", "°F"):
        value, unit = round((value - 32) / 1.8, 2), "Cel"  # US gateways report Fahrenheit
    return value, unit


def _waveform(obs: Observation, path: str, start_ms: int, source: str) -> list[Waveform]:
    """SampledData -> Waveform chunks of at most MAX_SAMPLES (seq assigned later)."""
    kind = None
    for system, code in _codes(obs.code):
        if system in MDC_SYSTEMS and code.isdigit():
            kind = waveform_kind(mdc=int(code))
            if kind is not None:
                break
    if kind is None:
        raise DomainError("invalid_vitals", "a waveform needs an MDC code (131328, 131330, 150452)")
    sd = obs.valueSampledData
    if sd.dimensions != 1:
        raise DomainError("invalid_vitals", "only single-channel SampledData (dimensions 1)")
    period = float(sd.period)
    if period <= 0:
        raise DomainError("invalid_vitals", "period must be positive (ms between samples)")
    rate = 1000.0 / period
    matched = [r for r in kind.rates if abs(r - rate) <= 1e-6 * r]
    if not matched:
        raise DomainError(
            "invalid_vitals", f"period {period:g} ms is {rate:g} Hz; {kind.key} takes {kind.rates}"
        )
    if not sd.data:
        raise DomainError("invalid_vitals", "SampledData has no data")
    origin = float(sd.origin.value or 0)
    factor = float(sd.factor) if sd.factor is not None else 1.0
    limits = {"L": sd.lowerLimit, "U": sd.upperLimit}
    tokens_ = sd.data.split()
    if len(tokens_) > MAX_WAVE_SAMPLES:
        raise DomainError("invalid_vitals", f"at most {MAX_WAVE_SAMPLES} samples per request")
    samples: list[float] = []
    for i, tok in enumerate(tokens_):
        if tok in limits:
            limit = limits[tok]
            if limit is None:
                raise DomainError("invalid_vitals", f"data[{i}] is {tok} but no limit is given")
            samples.append(float(limit))  # limits are in the data's final units
            continue
        try:
            x = float(tok)
        except ValueError:
            hint = " (E, a gap, is not supported)" if tok == "E" else ""
            raise DomainError(
                "invalid_vitals", f"data[{i}] {tok!r} is not a number{hint}"
            ) from None
        if not math.isfinite(x):
            raise DomainError("invalid_vitals", f"data[{i}] {tok!r} is not finite")
        samples.append(origin + factor * x)
    unit = sd.origin.code or sd.origin.unit
    rate = matched[0]
    return [
        make_waveform(
            kind, start_ms + i * period, rate, 0, samples[i : i + MAX_SAMPLES], source, unit
        )
        for i in range(0, len(samples), MAX_SAMPLES)
    ]


def _observation(obs: Observation, path: str, now_ms: int, batch: VitalsBatch,
                 issues: list[Issue], skipped: list[Issue]) -> None:  # fmt: skip
    if obs.status not in FHIR_STATUSES:
        issues.append(Issue(f"{path}.status", f"{obs.status!r} is not an Observation status"))
        return
    if obs.status not in SHOWN_STATUSES:
        skipped.append(Issue(path, f"status {obs.status}: not a measurement to display"))
        return
    time_ms = _effective_ms(obs, path, issues)
    source = _source(obs)
    when = now_ms if time_ms is None else time_ms
    if obs.valueSampledData is not None:
        try:
            batch.waveforms.extend(_waveform(obs, path, when, source))
        except DomainError as exc:
            issues.append(Issue(f"{path}.valueSampledData", exc.message, "value"))
        return
    found = False
    parts: list[tuple[str, Any, Any]] = [(path, obs.code, obs.valueQuantity)]
    parts += [(f"{path}.component[{i}]", c.code, c.valueQuantity)
              for i, c in enumerate(obs.component or ())]  # fmt: skip
    for where, code, quantity in parts:
        kind = _numeric_kind(code)
        if kind is None or quantity is None:
            continue
        found = True
        try:
            value, unit = _quantity(quantity, kind)
            batch.numerics.append(make_numeric(kind, value, unit, when, source))
        except DomainError as exc:
            issues.append(Issue(f"{where}.valueQuantity", exc.message, "value"))
    if not found:
        codes = ", ".join(f"{s or '?'}|{c}" for s, c in _codes(obs.code)) or "no coding"
        why = ("no value (dataAbsentReason)" if obs.dataAbsentReason is not None
               else f"not a vital sign this server displays ({codes})")  # fmt: skip
        skipped.append(Issue(path, why, "not-supported"))


def parse_observations(body: Any, room: str, received_ms: int | None = None) -> Parsed:
    """Validate an Observation or Bundle (parsed JSON) into one batch; FhirError if invalid.

    Waveforms have `seq` 0 here: the caller numbers them per stream (`number_waveforms`).
    """
    now_ms = int(time.time() * 1000) if received_ms is None else received_ms
    if not isinstance(body, dict):
        raise FhirError("the body must be a FHIR resource (a JSON object)",
                        [Issue("", "expected a JSON object", "structure")])  # fmt: skip
    resource_type = body.get("resourceType")
    observations: list[tuple[str, Observation]] = []
    skipped: list[Issue] = []
    try:
        if resource_type == "Observation":
            observations.append(("Observation", Observation.model_validate(body)))
        elif resource_type == "Bundle":
            bundle = Bundle.model_validate(body)
            if bundle.type not in BUNDLE_TYPES:
                raise FhirError(
                    f"Bundle type {bundle.type!r}: use one of {sorted(BUNDLE_TYPES)}",
                    [Issue("Bundle.type", "unsupported type", "not-supported")],
                )
            for i, entry in enumerate(bundle.entry or ()):
                path = f"Bundle.entry[{i}].resource"
                res = entry.resource
                if isinstance(res, Observation):
                    observations.append((path, res))
                elif res is not None:
                    skipped.append(Issue(path, f"a {res.get_resource_type()} is not an Observation",
                                         "not-supported"))  # fmt: skip
        else:
            raise FhirError(
                "resourceType must be Observation or Bundle",
                [Issue("resourceType", f"got {resource_type!r}", "structure")],
            )
    except ValidationError as exc:
        prefix = resource_type if isinstance(resource_type, str) else ""
        issues = _pydantic_issues(exc, prefix)
        raise FhirError(f"not a valid FHIR R4 {resource_type}", issues[:MAX_ISSUES]) from None

    batch = VitalsBatch(room=room, received_ms=now_ms, via="fhir")
    issues: list[Issue] = []
    for path, obs in observations:
        _observation(obs, path, now_ms, batch, issues, skipped)
    if issues:
        raise FhirError(f"{len(issues)} invalid value(s)", issues[:MAX_ISSUES])
    if not batch.numerics and not batch.waveforms:
        why = skipped or [Issue("", "no Observation", "required")]
        raise FhirError("no vital signs to display in this body", why[:MAX_ISSUES])
    return Parsed(batch, skipped, sum(len(w.samples) for w in batch.waveforms))


def number_waveforms(batch: VitalsBatch, counters: dict[tuple[str, str, str], int]) -> None:
    """Give each waveform chunk the next `seq` of its (room, source, kind) stream.

    FHIR has no sequence number; a stream's numbers are consecutive per node, per posting.
    """
    numbered = []
    for w in batch.waveforms:
        key = (batch.room, w.source, w.kind)
        seq = counters.pop(key, 0)  # pop + set: most recently used last, oldest first
        counters[key] = seq + 1
        numbered.append(dataclasses.replace(w, seq=seq))
        while len(counters) > MAX_SEQ_STREAMS:
            counters.pop(next(iter(counters)))
    batch.waveforms = numbered
