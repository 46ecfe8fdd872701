"""Live recording: a recorder is one more sink of a forwarder and of the room's events."""
