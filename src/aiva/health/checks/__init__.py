"""The built-in check types, one module each; `build_checks` turns settings into checks."""
