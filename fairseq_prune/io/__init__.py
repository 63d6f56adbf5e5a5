"""Checkpoints in and out (reading with clear errors, atomic writes, resume), safe output and the one error root: the bottom stage."""
