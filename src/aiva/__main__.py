"""`python -m aiva`: the same as the `aiva` command."""

from aiva.cli import main

main()
