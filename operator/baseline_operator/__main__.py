"""`python -m baseline_operator`: same as the `baseline-operator` command."""

from baseline_operator.cli import main

main()
