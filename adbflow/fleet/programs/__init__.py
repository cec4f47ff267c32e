"""Stand-in device programs run inside virtual devices (see fleet-design)."""
