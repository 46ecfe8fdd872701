"""Synthetic media sources: the laparoscopy-like scene, its timestamp code, the encoder, packet
tracks, clips."""
