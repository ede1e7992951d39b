"""Trajectory matching (DATM / MTT): window schedule, initialisers, unroll engines, matching loss, loop."""
