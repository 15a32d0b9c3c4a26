"""Hostile-input suite (issue #12): each case against a real `aiva serve`."""
