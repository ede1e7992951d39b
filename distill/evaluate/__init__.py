"""Evaluation: train fresh networks on a (distilled or baseline) set and test them on real data."""
