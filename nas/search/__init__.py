"""Searches: compound coefficients (scale.py), sharing one runner (runner.py) and constraint (constraint.py)."""
