"""Datasets as uint8 tensors on the device: torchvision datasets, folders, image domains, low-resolution pairs;
and gan-data's converted datasets (converted.py), streamed from disk when they do not fit (streaming.py)."""
