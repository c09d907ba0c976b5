"""Inference: preprocessing, prediction backends, multi-person decoding, visualization."""
