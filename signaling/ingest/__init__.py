"""Ingest from devices: HL7 v2 over MLLP and FHIR R4, mapped onto the vitals model."""
