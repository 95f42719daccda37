"""The gateway's error vocabulary, in S3's own shape: every refusal an S3 client sees is one of these."""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape


@dataclass(eq=False)
class S3Error(Exception):
    code: str
    message: str
    status: int
    resource: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")

    def to_xml(self, request_id: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(self.resource)}</Resource><RequestId>{escape(request_id)}</RequestId></Error>"
        ).encode()

    # The constructors below are the error vocabulary of the gateway; the codes and statuses are S3's.

    @classmethod
    def access_denied(cls, message: str = "Access Denied", resource: str = "") -> S3Error:
        return cls("AccessDenied", message, 403, resource)

    @classmethod
    def signature_mismatch(cls, message: str | None = None) -> S3Error:
        return cls(
            "SignatureDoesNotMatch",
            message
            or "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            403,
        )

    @classmethod
    def invalid_access_key(cls) -> S3Error:
        return cls(
            "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.", 403
        )

    @classmethod
    def invalid_token(cls, message: str = "The provided token is malformed or otherwise invalid.") -> S3Error:
        return cls("InvalidToken", message, 400)

    @classmethod
    def expired_token(cls) -> S3Error:
        return cls("ExpiredToken", "The provided token has expired.", 400)

    @classmethod
    def time_skewed(cls) -> S3Error:
        return cls(
            "RequestTimeTooSkewed",
            "The difference between the request time and the server's time is too large.",
            403,
        )

    @classmethod
    def invalid_argument(cls, message: str) -> S3Error:
        return cls("InvalidArgument", message, 400)

    @classmethod
    def invalid_request(cls, message: str) -> S3Error:
        return cls("InvalidRequest", message, 400)

    @classmethod
    def malformed_xml(cls, message: str = "The XML you provided was not well-formed.") -> S3Error:
        return cls("MalformedXML", message, 400)

    @classmethod
    def not_implemented(cls, message: str) -> S3Error:
        return cls("NotImplemented", message, 501)

    @classmethod
    def incomplete_body(cls, message: str = "You did not provide the number of bytes specified.") -> S3Error:
        return cls("IncompleteBody", message, 400)

    @classmethod
    def bad_digest(cls, message: str) -> S3Error:
        return cls("BadDigest", message, 400)

    @classmethod
    def entity_too_large(cls, message: str) -> S3Error:
        return cls("EntityTooLarge", message, 400)

    @classmethod
    def no_such_key(cls) -> S3Error:
        return cls("NoSuchKey", "The specified key does not exist.", 404)

    @classmethod
    def internal(cls) -> S3Error:
        return cls("InternalError", "We encountered an internal error. Please try again.", 500)

    @classmethod
    def service_unavailable(cls, message: str = "Please reduce your request rate.") -> S3Error:
        return cls("ServiceUnavailable", message, 503)
