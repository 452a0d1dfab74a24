"""`python -m hpcjup`."""

from hpcjup.cli import main

main()
