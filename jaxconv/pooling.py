"""Placeholder: being written."""
avg_pool = max_pool = None
