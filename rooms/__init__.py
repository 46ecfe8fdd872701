"""The domain of orbridge: rooms, participants, roles, grants and tokens, presence, annotations
and vitals.

Nothing here knows about HTTP, Socket.IO or RTP, and nothing here imports the rest of orbridge.
"""
