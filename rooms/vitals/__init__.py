"""Vitals: one model for every way in, alarms with hysteresis, the hub that fans them out."""
