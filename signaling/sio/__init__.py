"""The Socket.IO face: the namespace, the event gate, the schemas and the thin handlers."""
