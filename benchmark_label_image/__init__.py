"""Calibrate device profiles: classify latency at several CPU loads, adb latency, push
bandwidth, written to profiles/<model>.toml. See run.py; run `python -m benchmark_label_image`."""
