"""Datasets: reading images, building aligned face datasets, loading them for training."""
