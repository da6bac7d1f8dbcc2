"""File access that works the same on local paths and object-store URLs (gs://...)."""
