"""`python -m aiva`: the same as the `aiva` command."""

from aiva.entry import main

main()
