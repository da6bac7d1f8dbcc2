"""ArrayRecord preparation for any Source: write its items once, read them back by index."""
from jaxaudio.data.records.reader import PreparedSource, read_info
from jaxaudio.data.records.writer import write_records

__all__ = ["PreparedSource", "read_info", "write_records"]
