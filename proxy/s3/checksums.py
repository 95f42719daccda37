"""S3's flexible checksums (CRC32, CRC32C, CRC64NVME, SHA1, SHA256), computed incrementally over a stream.

Digests are S3's: big-endian bytes, base64-encoded. CRC32C/CRC64NVME come from awscrt, as in botocore.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Callable
from typing import Protocol

from awscrt import checksums as crt

from proxy.errors import S3Error

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
_HEADER_PREFIX = "x-amz-checksum-"
_Buffer = bytes | bytearray | memoryview


class Checksum(Protocol):
    def update(self, data: _Buffer) -> None: ...

    def digest(self) -> bytes: ...

    def b64digest(self) -> str: ...


class _Crc:
    __slots__ = ("_fn", "_value", "_width")

    def __init__(self, fn: Callable[[_Buffer, int], int], width: int) -> None:
        self._fn = fn
        self._value = 0
        self._width = width

    def update(self, data: _Buffer) -> None:
        self._value = self._fn(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _Hash:
    __slots__ = ("_hash",)

    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: _Buffer) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self._hash.digest()).decode("ascii")


_FACTORIES: dict[str, Callable[[], Checksum]] = {
    "CRC32": lambda: _Crc(zlib.crc32, 4),
    "CRC32C": lambda: _Crc(crt.crc32c, 4),
    "CRC64NVME": lambda: _Crc(crt.crc64nvme, 8),
    "SHA1": lambda: _Hash("sha1"),
    "SHA256": lambda: _Hash("sha256"),
}


def new_checksum(algorithm: str) -> Checksum:
    """A fresh incremental checksum for an S3 checksum algorithm name (case-insensitive)."""
    factory = _FACTORIES.get(algorithm.upper())
    if factory is None:
        raise S3Error.invalid_request(
            f"Checksum algorithm {algorithm!r} is not supported; use one of {', '.join(ALGORITHMS)}."
        )
    return factory()


def checksum_header_name(algorithm: str) -> str:
    """CRC32 -> x-amz-checksum-crc32."""
    upper = algorithm.upper()
    if upper not in _FACTORIES:
        raise S3Error.invalid_request(f"Checksum algorithm {algorithm!r} is not supported.")
    return _HEADER_PREFIX + upper.lower()


def algorithm_for_header(name: str) -> str | None:
    """x-amz-checksum-crc32 -> CRC32; None for any other header name."""
    lower = name.strip().lower()
    if not lower.startswith(_HEADER_PREFIX):
        return None
    algorithm = lower[len(_HEADER_PREFIX) :].upper()
    return algorithm if algorithm in _FACTORIES else None
