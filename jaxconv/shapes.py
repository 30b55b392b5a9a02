"""Placeholder: being written."""
output_shape = receptive_field = None
