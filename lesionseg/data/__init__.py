"""Data: NIfTI I/O, nnU-Net-layout datasets, the synthetic generator, preprocessing and splits."""
