"""Loaded by Python at start-up when this folder is on PYTHONPATH (tests/fast/test_hookless.py):
HOOKLESS_BREAK names one of the fast layer's hooks (aiva.fast.HOOKS), taken away before
aiva starts (breaks.py says how).
"""

import os

from breaks import apply

if os.environ.get("HOOKLESS_BREAK"):
    apply(os.environ["HOOKLESS_BREAK"])
