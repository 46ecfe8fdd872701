"""Recording, the event log, the library, replay and export (issue #6)."""
