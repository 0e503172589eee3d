"""gan-sample: drawing images, walks and style mixing from a checkpoint."""
