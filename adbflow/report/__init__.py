"""What people look at: trace exports (Chrome/Perfetto, CSV, JSONL) and the HTML report."""
