"""Everything aiortc: peer connection setup, the encoded-frame tap, track forwarding.

The hot path never decodes or encodes: RTP -> jitter buffer -> encoded frame (av.Packet)
-> TrackForwarder -> one bounded queue per subscriber -> RTCRtpSender packetizes.
"""
