"""Export for teaching: burned-in overlays and vitals, de-identification."""
