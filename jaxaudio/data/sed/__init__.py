"""Sound event detection data: the DESED layout, frame labels, clip sources."""
