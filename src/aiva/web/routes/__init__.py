"""aiva's own routes, one module per endpoint family."""
