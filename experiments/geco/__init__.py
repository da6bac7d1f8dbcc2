"""GeCo anomalous sound detection."""
