"""HTTP routes: health, metrics, the rooms API, pages, the recordings library, FHIR ingest."""
