"""Evaluation of separated audio: per-item scoring and the results report."""
