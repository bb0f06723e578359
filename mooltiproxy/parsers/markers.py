"""What every parser of streamed text needs: how much of a buffer's end may be the start of a marker,
and so must be held back until the next piece says."""

from __future__ import annotations


def partial_marker(buffer: str, marker: str) -> int:
    """Length of the longest end of the buffer that begins the marker."""
    for length in range(min(len(marker) - 1, len(buffer)), 0, -1):
        if buffer.endswith(marker[:length]):
            return length
    return 0
