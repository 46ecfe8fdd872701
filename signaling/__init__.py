"""The server's face: app factory, CLI, settings, tokens, Socket.IO and HTTP."""

__version__ = "0.1.0"
