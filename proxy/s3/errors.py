"""S3's error shape for the data plane: the shared `S3Error` (proxy/errors.py), rendered as S3 XML."""

from proxy.errors import S3Error

__all__ = ["S3Error"]
