"""Tests of recording/ (issue #6)."""
