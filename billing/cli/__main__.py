"""`python -m billing.cli`: the `billing` command, as the console script runs it."""

from billing.cli import main

main()
