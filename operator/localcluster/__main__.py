"""`python -m localcluster`: same as the `baseline-localcluster` command."""

from localcluster.cli import main

main()
