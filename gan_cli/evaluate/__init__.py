"""gan-eval: judge any checkpoint, run, sweep or set of images after training (main.py), with the
metrics of measures.py and usefulness.py, read by judge.py, reported by report.py."""
