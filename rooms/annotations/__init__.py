"""Annotations (telestration): the model and the per-room hub that keeps overlays."""
