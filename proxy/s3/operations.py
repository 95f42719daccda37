"""Classify an S3 request into the operation it is and the targets a grant must cover for it to pass.

Pure and fail-closed: a request matches exactly one known shape (method, sub-resources, the query
parameters that shape allows, the copy-source header) or it is "Unknown" with no targets, and is denied.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto

from proxy.access.grants import Action, Overwrite, Scope, Target
from proxy.s3.addressing import Address, parse_copy_source, resolve
from proxy.s3.request import RequestHead

UNKNOWN = "Unknown"

COPY_SOURCE_HEADER = "x-amz-copy-source"
BYPASS_GOVERNANCE_HEADER = "x-amz-bypass-governance-retention"

# Parameters any request may carry without changing what it does (presigned-URL auth, SDK hints).
_PRESIGN_PARAMS = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
    }
)
_HINT_PARAMS = frozenset({"x-id"})

_RESPONSE_OVERRIDES = frozenset(
    {
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    }
)
# Canned ACLs that publish nothing; any other ACL, grant, tagging or lock header set along with a write
# does what an admin sub-resource does, so it needs admin as well.
_PRIVATE_CANNED_ACLS = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
_ADMIN_WRITE_HEADERS = frozenset(
    {
        "x-amz-tagging",
        "x-amz-object-lock-mode",
        "x-amz-object-lock-retain-until-date",
        "x-amz-object-lock-legal-hold",
    }
)


# The writes that make an object under its key, replacing any there unless sent with If-None-Match: *
# (S3 conditional writes); every other write (starting, uploading or aborting a multipart upload)
# never replaces an object.
_COMPLETES_OBJECT = frozenset({"PutObject", "CopyObject", "CompleteMultipartUpload"})


class _Kind(Enum):
    READ = auto()
    LIST_PREFIX = auto()
    LIST_OBJECT = auto()
    WRITE = auto()
    DELETE = auto()
    DELETE_MANY = auto()
    BUCKET_META = auto()
    BUCKET_ADMIN = auto()
    OBJECT_ADMIN = auto()
    BUCKET_LIST = auto()  # ListBuckets: answered by the gateway from the caller's grants


class _Level(Enum):
    SERVICE = auto()
    BUCKET = auto()
    OBJECT = auto()


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    kind: _Kind
    requires: tuple[tuple[str, str | None], ...] = ()  # sub-resources, with a required value or None
    allows: frozenset[str] = frozenset()  # other query parameters this operation takes
    copy: bool = False  # x-amz-copy-source: required when True, refused when False
    # Every parameter name the rule takes besides presign ones: derived, so a request's names are
    # checked with one set comparison.
    accepts: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        required = frozenset(name for name, _ in self.requires)
        object.__setattr__(self, "accepts", required | self.allows | _HINT_PARAMS)

    def matches(self, params: dict[str, str], extra: frozenset[str] | set[str], copy_source: bool) -> bool:
        """`extra`: the names in `params` other than presign ones (see _non_presign)."""
        if copy_source != self.copy:
            return False
        for name, value in self.requires:
            if name not in params or (value is not None and params[name] != value):
                return False
        return extra <= self.accepts


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # S3 API name ("GetObject", "ListObjectsV2", ...); "Unknown" if unrecognised
    bucket: str | None
    key: str | None
    targets: tuple[Target, ...]  # what must be covered; () => denied
    # DeleteObjects: the per-key targets come from the XML body, each key needing every one of these.
    body_actions: tuple[Action, ...] = ()
    copy_source: tuple[str, str] | None = None  # (bucket, key) for CopyObject / UploadPartCopy
    # ListBuckets: never forwarded, nothing to authorize; the gateway answers with the caller's buckets.
    gateway_answers: bool = False

    @property
    def body_targets(self) -> bool:
        return bool(self.body_actions)

    @property
    def action(self) -> Action | None:
        """The primary action, for logs and metrics."""
        if self.targets:
            return self.targets[0].action
        return self.body_actions[0] if self.body_actions else None

    def targets_in_body(self, keys: Iterable[str]) -> tuple[Target, ...]:
        """The targets of a body-keyed operation once its keys are read: every action on every key."""
        bucket = self.bucket or ""
        return tuple(Target(action, bucket, key) for key in keys for action in self.body_actions)


def classify(head: RequestHead, *, virtual_host_base: str = "", host: str | None = None) -> Operation:
    """The S3 operation a request performs and every target a grant must cover; raises only S3Error."""
    address = resolve(head, virtual_host_base=virtual_host_base, host=host)
    params = _unique_params(head.query)
    copy_values: Sequence[str] = head.headers.getall(COPY_SOURCE_HEADER, ())
    if params is None or len(copy_values) > 1:
        return _unknown(address)
    rule = _only_match(_level(address), head.method, params, bool(copy_values))
    if rule is None:
        return _unknown(address)
    copy_source = None
    if rule.copy:
        source_bucket, source_key, _version = parse_copy_source(copy_values[0])
        copy_source = (source_bucket, source_key)
    return _operation(rule, address, head, params, copy_source)


def _unknown(address: Address) -> Operation:
    return Operation(UNKNOWN, address.bucket, address.key, ())


def _only_match(level: _Level, method: str, params: dict[str, str], copy_source: bool) -> _Rule | None:
    """The one rule for this request, or None when none or several match (fail closed)."""
    table = _DISPATCH.get((level, method))
    if table is None:
        return None
    extra = _non_presign(params)
    # A rule can only match if its first sub-resource is present: look those up instead of trying
    # every rule of the method (a bucket GET has thirty).
    candidates = table.plain
    for name in extra:
        candidates += table.by_subresource.get(name, ())
    found = None
    for rule in candidates:
        if rule.matches(params, extra, copy_source):
            if found is not None:
                return None
            found = rule
    return found


def _non_presign(params: dict[str, str]) -> set[str]:
    """The parameter names other than presigned-URL auth ones (any case): those an operation must take."""
    return {name for name in params if name.lower() not in _PRESIGN_PARAMS}


def _operation(
    rule: _Rule,
    address: Address,
    head: RequestHead,
    params: dict[str, str],
    copy_source: tuple[str, str] | None,
) -> Operation:
    bucket, key = address.bucket or "", address.key or ""
    kind = rule.kind
    targets: tuple[Target, ...]
    if kind is _Kind.READ:
        targets = (Target(Action.READ, bucket, key, Scope.OBJECT),)
    elif kind is _Kind.LIST_PREFIX:
        targets = (Target(Action.LIST, bucket, params.get("prefix", ""), Scope.PREFIX),)
    elif kind is _Kind.LIST_OBJECT:
        targets = (Target(Action.LIST, bucket, key, Scope.OBJECT),)
    elif kind is _Kind.WRITE:
        targets = (Target(Action.WRITE, bucket, key, Scope.OBJECT, _overwrite(rule.name, head)),)
        if copy_source is not None:
            targets += (Target(Action.READ, copy_source[0], copy_source[1], Scope.OBJECT),)
        if _sets_access_or_retention(head):
            targets += (Target(Action.ADMIN, bucket, key, Scope.OBJECT),)
    elif kind is _Kind.DELETE:
        targets = (Target(Action.DELETE, bucket, key, Scope.OBJECT),)
        if BYPASS_GOVERNANCE_HEADER in head.headers:
            targets += (Target(Action.ADMIN, bucket, key, Scope.OBJECT),)
    elif kind is _Kind.DELETE_MANY:
        # Per-key targets come from the body: delete on each key and, when bypassing governance
        # retention (as for a single DeleteObject), admin on each key too.
        bypass = BYPASS_GOVERNANCE_HEADER in head.headers
        actions = (Action.DELETE, Action.ADMIN) if bypass else (Action.DELETE,)
        return Operation(rule.name, bucket, None, (), body_actions=actions)
    elif kind is _Kind.BUCKET_META:
        targets = (Target(Action.LIST, bucket, "", Scope.BUCKET),)
    elif kind is _Kind.BUCKET_ADMIN:
        targets = (Target(Action.ADMIN, bucket, "", Scope.PREFIX),)
    elif kind is _Kind.OBJECT_ADMIN:
        targets = (Target(Action.ADMIN, bucket, key, Scope.OBJECT),)
    else:  # _Kind.BUCKET_LIST
        return Operation(rule.name, None, None, (), gateway_answers=True)
    return Operation(rule.name, address.bucket, address.key, targets, copy_source=copy_source)


def _overwrite(name: str, head: RequestHead) -> Overwrite:
    """Whether this write can replace an object. A caller's own If-Match, or an If-None-Match other
    than `*`, asks to replace one, so such a write needs `write` (a `create` grant cannot turn the
    guard off); `If-None-Match: *` is the guard itself."""
    if name not in _COMPLETES_OBJECT:
        return Overwrite.NEVER
    if "if-match" in head.headers:
        return Overwrite.MAY
    if any(value.strip() != "*" for value in head.headers.getall("if-none-match", ())):
        return Overwrite.MAY
    return Overwrite.GUARDABLE


def _sets_access_or_retention(head: RequestHead) -> bool:
    for name in head.headers:
        lowered = name.lower()
        if lowered in _ADMIN_WRITE_HEADERS or lowered.startswith("x-amz-grant-"):
            return True
    return any(value.strip() not in _PRIVATE_CANNED_ACLS for value in head.headers.getall("x-amz-acl", []))


def _unique_params(query: tuple[tuple[str, str], ...]) -> dict[str, str] | None:
    """Query parameters by name; None when a name repeats, since S3's choice among repeats is unknown."""
    params: dict[str, str] = {}
    for name, value in query:
        if name in params:
            return None
        params[name] = value
    return params


def _level(address: Address) -> _Level:
    if address.bucket is None:
        return _Level.SERVICE
    return _Level.BUCKET if address.key is None else _Level.OBJECT


def _rule(
    name: str,
    kind: _Kind,
    *requires: str | tuple[str, str],
    allows: tuple[str, ...] | frozenset[str] = (),
    copy: bool = False,
) -> _Rule:
    required = tuple((r, None) if isinstance(r, str) else r for r in requires)
    return _Rule(name, kind, required, frozenset(allows), copy)


_VERSION = ("versionId",)
_GET_OBJECT_PARAMS = frozenset({"versionId", "partNumber", *_RESPONSE_OVERRIDES})
_LIST_COMMON = ("prefix", "delimiter", "encoding-type")
_PAGED = ("continuation-token",)


# Bucket configuration: every sub-resource needs admin on the whole bucket.
_BUCKET_ADMIN_GET = (
    _rule("GetBucketAbac", _Kind.BUCKET_ADMIN, "abac"),
    _rule("GetBucketAccelerateConfiguration", _Kind.BUCKET_ADMIN, "accelerate"),
    _rule("GetBucketAcl", _Kind.BUCKET_ADMIN, "acl"),
    _rule("GetBucketAnalyticsConfiguration", _Kind.BUCKET_ADMIN, "analytics", "id"),
    _rule("ListBucketAnalyticsConfigurations", _Kind.BUCKET_ADMIN, "analytics", allows=_PAGED),
    _rule("GetBucketCors", _Kind.BUCKET_ADMIN, "cors"),
    _rule("GetBucketEncryption", _Kind.BUCKET_ADMIN, "encryption"),
    _rule("GetBucketIntelligentTieringConfiguration", _Kind.BUCKET_ADMIN, "intelligent-tiering", "id"),
    _rule(
        "ListBucketIntelligentTieringConfigurations", _Kind.BUCKET_ADMIN, "intelligent-tiering", allows=_PAGED
    ),
    _rule("GetBucketInventoryConfiguration", _Kind.BUCKET_ADMIN, "inventory", "id"),
    _rule("ListBucketInventoryConfigurations", _Kind.BUCKET_ADMIN, "inventory", allows=_PAGED),
    _rule("GetBucketLifecycleConfiguration", _Kind.BUCKET_ADMIN, "lifecycle"),
    _rule("GetBucketLogging", _Kind.BUCKET_ADMIN, "logging"),
    _rule("GetBucketMetadataConfiguration", _Kind.BUCKET_ADMIN, "metadataConfiguration"),
    _rule("GetBucketMetadataTableConfiguration", _Kind.BUCKET_ADMIN, "metadataTable"),
    _rule("GetBucketMetricsConfiguration", _Kind.BUCKET_ADMIN, "metrics", "id"),
    _rule("ListBucketMetricsConfigurations", _Kind.BUCKET_ADMIN, "metrics", allows=_PAGED),
    _rule("GetBucketNotificationConfiguration", _Kind.BUCKET_ADMIN, "notification"),
    _rule("GetBucketOwnershipControls", _Kind.BUCKET_ADMIN, "ownershipControls"),
    _rule("GetBucketPolicy", _Kind.BUCKET_ADMIN, "policy"),
    _rule("GetBucketPolicyStatus", _Kind.BUCKET_ADMIN, "policyStatus"),
    _rule("GetBucketReplication", _Kind.BUCKET_ADMIN, "replication"),
    _rule("GetBucketRequestPayment", _Kind.BUCKET_ADMIN, "requestPayment"),
    _rule("GetBucketTagging", _Kind.BUCKET_ADMIN, "tagging"),
    _rule("GetBucketVersioning", _Kind.BUCKET_ADMIN, "versioning"),
    _rule("GetBucketWebsite", _Kind.BUCKET_ADMIN, "website"),
    _rule("GetObjectLockConfiguration", _Kind.BUCKET_ADMIN, "object-lock"),
    _rule("GetPublicAccessBlock", _Kind.BUCKET_ADMIN, "publicAccessBlock"),
    # Mints S3 Express session credentials for the whole bucket.
    _rule("CreateSession", _Kind.BUCKET_ADMIN, "session"),
)
_BUCKET_ADMIN_PUT = (
    _rule("PutBucketAbac", _Kind.BUCKET_ADMIN, "abac"),
    _rule("PutBucketAccelerateConfiguration", _Kind.BUCKET_ADMIN, "accelerate"),
    _rule("PutBucketAcl", _Kind.BUCKET_ADMIN, "acl"),
    _rule("PutBucketAnalyticsConfiguration", _Kind.BUCKET_ADMIN, "analytics", "id"),
    _rule("PutBucketCors", _Kind.BUCKET_ADMIN, "cors"),
    _rule("PutBucketEncryption", _Kind.BUCKET_ADMIN, "encryption"),
    _rule("PutBucketIntelligentTieringConfiguration", _Kind.BUCKET_ADMIN, "intelligent-tiering", "id"),
    _rule("PutBucketInventoryConfiguration", _Kind.BUCKET_ADMIN, "inventory", "id"),
    _rule("PutBucketLifecycleConfiguration", _Kind.BUCKET_ADMIN, "lifecycle"),
    _rule("PutBucketLogging", _Kind.BUCKET_ADMIN, "logging"),
    _rule("PutBucketMetricsConfiguration", _Kind.BUCKET_ADMIN, "metrics", "id"),
    _rule("PutBucketNotificationConfiguration", _Kind.BUCKET_ADMIN, "notification"),
    _rule("PutBucketOwnershipControls", _Kind.BUCKET_ADMIN, "ownershipControls"),
    _rule("PutBucketPolicy", _Kind.BUCKET_ADMIN, "policy"),
    _rule("PutBucketReplication", _Kind.BUCKET_ADMIN, "replication"),
    _rule("PutBucketRequestPayment", _Kind.BUCKET_ADMIN, "requestPayment"),
    _rule("PutBucketTagging", _Kind.BUCKET_ADMIN, "tagging"),
    _rule("PutBucketVersioning", _Kind.BUCKET_ADMIN, "versioning"),
    _rule("PutBucketWebsite", _Kind.BUCKET_ADMIN, "website"),
    _rule("PutObjectLockConfiguration", _Kind.BUCKET_ADMIN, "object-lock"),
    _rule("PutPublicAccessBlock", _Kind.BUCKET_ADMIN, "publicAccessBlock"),
    _rule("UpdateBucketMetadataAnnotationTableConfiguration", _Kind.BUCKET_ADMIN, "metadataAnnotationTable"),
    _rule("UpdateBucketMetadataInventoryTableConfiguration", _Kind.BUCKET_ADMIN, "metadataInventoryTable"),
    _rule("UpdateBucketMetadataJournalTableConfiguration", _Kind.BUCKET_ADMIN, "metadataJournalTable"),
)
_BUCKET_ADMIN_DELETE = (
    _rule("DeleteBucketAnalyticsConfiguration", _Kind.BUCKET_ADMIN, "analytics", "id"),
    _rule("DeleteBucketCors", _Kind.BUCKET_ADMIN, "cors"),
    _rule("DeleteBucketEncryption", _Kind.BUCKET_ADMIN, "encryption"),
    _rule("DeleteBucketIntelligentTieringConfiguration", _Kind.BUCKET_ADMIN, "intelligent-tiering", "id"),
    _rule("DeleteBucketInventoryConfiguration", _Kind.BUCKET_ADMIN, "inventory", "id"),
    _rule("DeleteBucketLifecycle", _Kind.BUCKET_ADMIN, "lifecycle"),
    _rule("DeleteBucketMetadataConfiguration", _Kind.BUCKET_ADMIN, "metadataConfiguration"),
    _rule("DeleteBucketMetadataTableConfiguration", _Kind.BUCKET_ADMIN, "metadataTable"),
    _rule("DeleteBucketMetricsConfiguration", _Kind.BUCKET_ADMIN, "metrics", "id"),
    _rule("DeleteBucketOwnershipControls", _Kind.BUCKET_ADMIN, "ownershipControls"),
    _rule("DeleteBucketPolicy", _Kind.BUCKET_ADMIN, "policy"),
    _rule("DeleteBucketReplication", _Kind.BUCKET_ADMIN, "replication"),
    _rule("DeleteBucketTagging", _Kind.BUCKET_ADMIN, "tagging"),
    _rule("DeleteBucketWebsite", _Kind.BUCKET_ADMIN, "website"),
    _rule("DeletePublicAccessBlock", _Kind.BUCKET_ADMIN, "publicAccessBlock"),
)
# Object sub-resources other than the data itself (ACLs, tags, retention...): admin on the object.
_OBJECT_ADMIN_GET = (
    _rule("GetObjectAcl", _Kind.OBJECT_ADMIN, "acl", allows=_VERSION),
    _rule("GetObjectTagging", _Kind.OBJECT_ADMIN, "tagging", allows=_VERSION),
    _rule("GetObjectRetention", _Kind.OBJECT_ADMIN, "retention", allows=_VERSION),
    _rule("GetObjectLegalHold", _Kind.OBJECT_ADMIN, "legal-hold", allows=_VERSION),
    _rule("GetObjectTorrent", _Kind.OBJECT_ADMIN, "torrent"),
    _rule("GetObjectAnnotation", _Kind.OBJECT_ADMIN, "annotation", "annotationName", allows=_VERSION),
    _rule(
        "ListObjectAnnotations",
        _Kind.OBJECT_ADMIN,
        "annotation",
        allows=(*_VERSION, *_PAGED, "max-annotation-results", "annotation-prefix"),
    ),
)
_OBJECT_ADMIN_PUT = (
    _rule("PutObjectAcl", _Kind.OBJECT_ADMIN, "acl", allows=_VERSION),
    _rule("PutObjectTagging", _Kind.OBJECT_ADMIN, "tagging", allows=_VERSION),
    _rule("PutObjectRetention", _Kind.OBJECT_ADMIN, "retention", allows=_VERSION),
    _rule("PutObjectLegalHold", _Kind.OBJECT_ADMIN, "legal-hold", allows=_VERSION),
    _rule("PutObjectAnnotation", _Kind.OBJECT_ADMIN, "annotation", "annotationName", allows=_VERSION),
    _rule("UpdateObjectEncryption", _Kind.OBJECT_ADMIN, "encryption", allows=_VERSION),
)
_OBJECT_ADMIN_DELETE = (
    _rule("DeleteObjectTagging", _Kind.OBJECT_ADMIN, "tagging", allows=_VERSION),
    _rule("DeleteObjectAnnotation", _Kind.OBJECT_ADMIN, "annotation", "annotationName", allows=_VERSION),
)

_RULES: dict[tuple[_Level, str], tuple[_Rule, ...]] = {
    (_Level.SERVICE, "GET"): (
        _rule(
            "ListBuckets",
            _Kind.BUCKET_LIST,
            allows=("max-buckets", "continuation-token", "prefix", "bucket-region", "max-directory-buckets"),
        ),
    ),
    (_Level.BUCKET, "HEAD"): (_rule("HeadBucket", _Kind.BUCKET_META),),
    (_Level.BUCKET, "GET"): (
        _rule("ListObjects", _Kind.LIST_PREFIX, allows=(*_LIST_COMMON, "marker", "max-keys")),
        _rule(
            "ListObjectsV2",
            _Kind.LIST_PREFIX,
            ("list-type", "2"),
            allows=(*_LIST_COMMON, "max-keys", "continuation-token", "fetch-owner", "start-after"),
        ),
        _rule(
            "ListObjectVersions",
            _Kind.LIST_PREFIX,
            "versions",
            allows=(*_LIST_COMMON, "max-keys", "key-marker", "version-id-marker"),
        ),
        _rule(
            "ListMultipartUploads",
            _Kind.LIST_PREFIX,
            "uploads",
            allows=(*_LIST_COMMON, "max-uploads", "key-marker", "upload-id-marker"),
        ),
        _rule("GetBucketLocation", _Kind.BUCKET_META, "location"),
        *_BUCKET_ADMIN_GET,
    ),
    (_Level.BUCKET, "PUT"): (
        _rule("CreateBucket", _Kind.BUCKET_ADMIN),
        *_BUCKET_ADMIN_PUT,
    ),
    (_Level.BUCKET, "DELETE"): (_rule("DeleteBucket", _Kind.BUCKET_ADMIN), *_BUCKET_ADMIN_DELETE),
    # A POST on a bucket without one of these is a browser form upload, which cannot be authorized.
    (_Level.BUCKET, "POST"): (
        _rule("DeleteObjects", _Kind.DELETE_MANY, "delete"),
        _rule("CreateBucketMetadataConfiguration", _Kind.BUCKET_ADMIN, "metadataConfiguration"),
        _rule("CreateBucketMetadataTableConfiguration", _Kind.BUCKET_ADMIN, "metadataTable"),
    ),
    (_Level.OBJECT, "HEAD"): (_rule("HeadObject", _Kind.READ, allows=_GET_OBJECT_PARAMS),),
    (_Level.OBJECT, "GET"): (
        _rule("GetObject", _Kind.READ, allows=_GET_OBJECT_PARAMS),
        _rule("GetObjectAttributes", _Kind.READ, "attributes", allows=_VERSION),
        _rule("ListParts", _Kind.LIST_OBJECT, "uploadId", allows=("max-parts", "part-number-marker")),
        *_OBJECT_ADMIN_GET,
    ),
    (_Level.OBJECT, "PUT"): (
        _rule("PutObject", _Kind.WRITE),
        _rule("CopyObject", _Kind.WRITE, copy=True),
        _rule("UploadPart", _Kind.WRITE, "partNumber", "uploadId"),
        _rule("UploadPartCopy", _Kind.WRITE, "partNumber", "uploadId", copy=True),
        *_OBJECT_ADMIN_PUT,
    ),
    (_Level.OBJECT, "POST"): (
        _rule("CreateMultipartUpload", _Kind.WRITE, "uploads"),
        _rule("CompleteMultipartUpload", _Kind.WRITE, "uploadId"),
        _rule("SelectObjectContent", _Kind.READ, "select", ("select-type", "2")),
        _rule("RestoreObject", _Kind.OBJECT_ADMIN, "restore", allows=_VERSION),
    ),
    (_Level.OBJECT, "DELETE"): (
        _rule("DeleteObject", _Kind.DELETE, allows=_VERSION),
        _rule("AbortMultipartUpload", _Kind.WRITE, "uploadId"),
        *_OBJECT_ADMIN_DELETE,
    ),
}


@dataclass(frozen=True, slots=True)
class _Table:
    """One (level, method)'s rules: those without a sub-resource, and the others by their first one."""

    plain: tuple[_Rule, ...]
    by_subresource: dict[str, tuple[_Rule, ...]]


def _index(rules: tuple[_Rule, ...]) -> _Table:
    by_subresource: dict[str, tuple[_Rule, ...]] = {}
    for rule in rules:
        if rule.requires:
            first = rule.requires[0][0]
            if first.lower() in _PRESIGN_PARAMS:  # _only_match never looks such a name up
                raise ValueError(f"sub-resource {first!r} is named like a presign parameter")
            by_subresource[first] = (*by_subresource.get(first, ()), rule)
    return _Table(tuple(r for r in rules if not r.requires), by_subresource)


_DISPATCH: dict[tuple[_Level, str], _Table] = {where: _index(rules) for where, rules in _RULES.items()}
