"""S3 request bodies that decide authorization (DeleteObjects keys, CompleteMultipartUpload parts), and
the bucket's ListObjectsV2 pages the gateway reads itself (the model catalogue's listing).

Pure and hostile-input safe: DTDs and entities are refused, size, depth and element counts are bounded, and
every failure is an S3Error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from proxy.errors import S3Error
from proxy.s3.addressing import validate_key

MAX_DELETE_BODY = 2 * 1024 * 1024
MAX_DELETE_KEYS = 1000
MAX_COMPLETE_BODY = 8 * 1024 * 1024
MAX_PARTS = 10_000
MAX_PART_NUMBER = 10_000

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_MAX_DEPTH = 3  # <Delete><Object><Key> is as deep as either body goes

_OBJECT_FIELDS = frozenset({"Key", "VersionId", "ETag", "LastModifiedTime", "Size"})
_PART_FIELDS = frozenset(
    {
        "PartNumber",
        "ETag",
        "ChecksumCRC32",
        "ChecksumCRC32C",
        "ChecksumCRC64NVME",
        "ChecksumSHA1",
        "ChecksumSHA256",
    }
)


@dataclass(slots=True)
class _Node:
    tag: str
    text: list[str] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)

    @property
    def value(self) -> str:
        return "".join(self.text)


def delete_objects_keys(body: bytes) -> tuple[tuple[str, str | None], ...]:
    """`<Delete><Object><Key>k</Key><VersionId>v</VersionId></Object>...</Delete>` -> ((k, v), ...)."""
    if len(body) > MAX_DELETE_BODY:
        raise S3Error.malformed_xml("The DeleteObjects request body is too large.")
    root = _parse(body, "Delete", max_elements=MAX_DELETE_KEYS * (len(_OBJECT_FIELDS) + 1) + 2)
    keys: list[tuple[str, str | None]] = []
    quiet = 0
    for child in root.children:
        if child.tag == "Quiet":
            quiet += 1
            _leaf_text(child)
            continue
        if child.tag != "Object":
            raise S3Error.malformed_xml(f"Unexpected element <{child.tag}> in <Delete>.")
        fields = _fields(child, _OBJECT_FIELDS)
        key = fields.get("Key")
        if not key:
            raise S3Error.malformed_xml("Every <Object> needs a non-empty <Key>.")
        version_id = fields.get("VersionId")
        if version_id == "":
            raise S3Error.malformed_xml("<VersionId> must not be empty.")
        keys.append((validate_key(key), version_id))
        if len(keys) > MAX_DELETE_KEYS:
            raise S3Error.malformed_xml(f"DeleteObjects accepts at most {MAX_DELETE_KEYS} keys.")
    if quiet > 1:
        raise S3Error.malformed_xml("<Quiet> may appear only once.")
    if not keys:
        raise S3Error.malformed_xml("DeleteObjects needs at least one <Object>.")
    return tuple(keys)


MAX_LISTING_BODY = 16 * 1024 * 1024
MAX_LISTED_KEYS = 1000


def listed_objects(body: bytes) -> tuple[list[tuple[str, int]], str | None]:
    """One ListObjectsV2 answer -> ([(key, size), ...], the next continuation token or None)."""
    if len(body) > MAX_LISTING_BODY:
        raise S3Error.malformed_xml("The listing is too large.")
    # <ListBucketResult><Contents><Owner><ID> is four deep; 16 fields per object is generous.
    root = _parse(body, "ListBucketResult", max_elements=MAX_LISTED_KEYS * 16 + 64, max_depth=4)
    objects: list[tuple[str, int]] = []
    token: str | None = None
    truncated = False
    for child in root.children:
        if child.tag == "Contents":
            fields = {c.tag: c.value for c in child.children}
            size = fields.get("Size", "")
            if "Key" in fields and size.isdigit():
                objects.append((fields["Key"], int(size)))
        elif child.tag == "NextContinuationToken":
            token = child.value or None
        elif child.tag == "IsTruncated":
            truncated = child.value.strip() == "true"
    return objects, token if truncated else None


def complete_multipart_parts(body: bytes) -> tuple[tuple[int, str], ...]:
    """`<CompleteMultipartUpload><Part><PartNumber>n</PartNumber><ETag>e</ETag></Part>...` -> ((n, e),)."""
    if len(body) > MAX_COMPLETE_BODY:
        raise S3Error.malformed_xml("The CompleteMultipartUpload request body is too large.")
    root = _parse(body, "CompleteMultipartUpload", max_elements=MAX_PARTS * (len(_PART_FIELDS) + 1) + 2)
    parts: list[tuple[int, str]] = []
    for child in root.children:
        if child.tag != "Part":
            raise S3Error.malformed_xml(f"Unexpected element <{child.tag}> in <CompleteMultipartUpload>.")
        fields = _fields(child, _PART_FIELDS)
        number, etag = fields.get("PartNumber"), fields.get("ETag")
        if number is None or not etag:
            raise S3Error.malformed_xml("Every <Part> needs a <PartNumber> and an <ETag>.")
        parts.append((_part_number(number), etag))
        if len(parts) > MAX_PARTS:
            raise S3Error.malformed_xml(f"A multipart upload has at most {MAX_PARTS} parts.")
    if not parts:
        raise S3Error.malformed_xml("CompleteMultipartUpload needs at least one <Part>.")
    return tuple(parts)


def _part_number(text: str) -> int:
    # int() alone would accept '+1', ' 1', '1_0' and non-ASCII digits.
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise S3Error.invalid_argument("<PartNumber> must be an integer between 1 and 10000.")
    number = int(text)
    if not 1 <= number <= MAX_PART_NUMBER:
        raise S3Error.invalid_argument("<PartNumber> must be an integer between 1 and 10000.")
    return number


def _fields(node: _Node, allowed: frozenset[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for child in node.children:
        if child.tag not in allowed:
            raise S3Error.malformed_xml(f"Unexpected element <{child.tag}> in <{node.tag}>.")
        if child.tag in fields:
            raise S3Error.malformed_xml(f"<{child.tag}> appears more than once in <{node.tag}>.")
        fields[child.tag] = _leaf_text(child)
    if node.value.strip():
        raise S3Error.malformed_xml(f"Unexpected text in <{node.tag}>.")
    return fields


def _leaf_text(node: _Node) -> str:
    if node.children:
        raise S3Error.malformed_xml(f"<{node.tag}> must contain text only.")
    return node.value


class _Refused(Exception):
    """Raised from inside the parser callbacks to stop at the first element over a limit."""


class _BoundedBuilder:
    """A parser target that builds only what these bodies need and stops early on hostile shapes."""

    def __init__(self, max_elements: int, max_depth: int = _MAX_DEPTH) -> None:
        self.root: _Node | None = None
        self._max_depth = max_depth
        self._stack: list[_Node] = []
        self._elements = 0
        self._max_elements = max_elements

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        self._elements += 1
        if len(self._stack) >= self._max_depth:
            raise _Refused("The XML is nested too deeply.")
        if self._elements > self._max_elements:
            raise _Refused("The XML has too many elements.")
        if attrs:
            raise _Refused("S3 request elements take no attributes.")
        node = _Node(_local_name(tag))
        if self._stack:
            self._stack[-1].children.append(node)
        elif self.root is None:
            self.root = node
        self._stack.append(node)

    def end(self, tag: str) -> None:
        self._stack.pop()

    def data(self, text: str) -> None:
        if not self._stack:
            return
        node = self._stack[-1]
        if node.children and text.strip():
            raise _Refused(f"Unexpected text in <{node.tag}>.")
        node.text.append(text)

    def close(self) -> _Node | None:
        return self.root


def _local_name(tag: str) -> str:
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        if namespace != S3_NAMESPACE:
            raise _Refused("Unexpected XML namespace.")
        return name
    return tag


def _parse(body: bytes, root_tag: str, *, max_elements: int, max_depth: int = _MAX_DEPTH) -> _Node:
    builder = _BoundedBuilder(max_elements, max_depth)
    try:
        parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        parser.feed(body)
        root = parser.close()
    except _Refused as refused:
        raise S3Error.malformed_xml(str(refused)) from None
    except DefusedXmlException:
        raise S3Error.malformed_xml("DTDs and entity declarations are not allowed.") from None
    except (ParseError, ValueError, LookupError, UnicodeError):
        raise S3Error.malformed_xml() from None
    if not isinstance(root, _Node) or root.tag != root_tag:
        raise S3Error.malformed_xml(f"The body must be a <{root_tag}> document.")
    if root.value.strip():
        raise S3Error.malformed_xml(f"Unexpected text in <{root_tag}>.")
    return root
