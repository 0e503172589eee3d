"""The one reporting funnel: TensorBoard, the terminal progress bar, log lines, files a run writes, HParams."""
