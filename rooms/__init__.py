"""The domain of orbridge: rooms, participants, roles and grants, presence.

Nothing here knows about HTTP, Socket.IO or RTP.
"""
