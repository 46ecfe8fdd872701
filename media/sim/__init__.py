"""Synthetic media sources: the laparoscopy-like scene, encoders, packet tracks, clips."""
