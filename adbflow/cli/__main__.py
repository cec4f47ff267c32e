"""`python -m adbflow.cli`: the same entry point as the `adbflow` console script."""
from adbflow.cli.main import main

main()
