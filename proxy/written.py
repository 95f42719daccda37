"""The newest store version this gateway's own control plane wrote, shared by all its workers.

Read-your-writes: once the API, a web page, the CLI or Slack on this gateway has answered that a grant
exists (or was revoked), every worker's S3 listener must already honour it. The workflow publishes the
store version of its write here before it answers; a worker whose view is older catches up before it
decides its next request. Reading the counter is one load from memory shared across `fork`, so the
S3 path pays nothing until there is something to catch up on, and no message or acknowledgement
between workers is needed. Other replicas are not told: they keep the store's notify/poll bound.
"""

from __future__ import annotations

import ctypes
import mmap


class WrittenVersion:
    """A 64-bit counter in anonymous shared memory: create it before the workers are forked.

    An aligned 8-byte store and load are single instructions on the machines the gateway runs on, so a
    reader never sees half of a write; only one process (worker 0, where the workflow runs) writes.
    """

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED)
        self._value = ctypes.c_int64.from_buffer(self._memory)

    @property
    def value(self) -> int:
        return self._value.value

    def publish(self, version: int) -> None:
        """Record that the store holds at least `version`; never moves back."""
        if version > self._value.value:
            self._value.value = version
