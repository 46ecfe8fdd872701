"""The server's face and composition root: app factory, settings, Socket.IO, HTTP, ingest, CLI."""

__version__ = "0.1.0"
