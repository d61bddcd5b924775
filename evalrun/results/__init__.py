"""Scoring, statistics and comparisons over stored results."""
