"""Datasets as uint8 tensors on the device: torchvision datasets, folders, image domains, low-resolution pairs."""
