"""The model catalogue learned from listings, and the distinct byte ranges counted per object."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.observe.models import MAX_RANGES, ModelCatalog, Ranges, find_models
from proxy.s3.trace import first_byte
from proxy.s3.xmlbodies import listed_objects

LISTING = [
    ("models/llama/config.json", 700),
    ("models/llama/model-00001-of-00002.safetensors", 4000),
    ("models/llama/model-00002-of-00002.safetensors", 1000),
    ("models/llama/model.safetensors.index.json", 300),
    ("models/tiny/tiny.gguf", 50),
    ("models/onnx/model.onnx", 80),
    ("models/onnx/sub/weights.pt", 20),
    ("models/empty-index/model.safetensors.index.json", 10),
    ("data/train.csv", 10**9),
    ("data/readme.md", 10),
    ("root.bin", 5),
]


def test_a_directory_of_weight_shards_is_a_model_sized_by_its_shards() -> None:
    models = {m.name: m for m in find_models("b", LISTING)}
    assert sorted(models) == [
        "s3://b/",
        "s3://b/models/empty-index/",
        "s3://b/models/llama/",
        "s3://b/models/onnx/",
        "s3://b/models/onnx/sub/",
        "s3://b/models/tiny/",
    ]
    llama = models["s3://b/models/llama/"]
    assert llama.size == 5000  # the shards only: config and index are not weights
    assert set(llama.shards) == {
        "models/llama/model-00001-of-00002.safetensors",
        "models/llama/model-00002-of-00002.safetensors",
    }
    assert models["s3://b/models/empty-index/"].size == 0  # an index whose shards lie elsewhere


def test_the_catalogue_finds_a_model_by_any_of_its_shards_and_nothing_else() -> None:
    catalog = ModelCatalog.of(find_models("b", LISTING))
    found = catalog.model_of("b", "models/llama/model-00002-of-00002.safetensors")
    assert found is not None and found.name == "s3://b/models/llama/"
    assert catalog.model_of("b", "models/llama/config.json") is None
    assert catalog.model_of("other", "models/llama/model-00002-of-00002.safetensors") is None
    assert catalog.model_of("b", None) is None
    assert len(catalog) == 5  # the index-only directory has no shard to be found by
    assert catalog.size == 4000 + 1000 + 50 + 80 + 20 + 5


def test_a_listing_page_gives_keys_sizes_and_the_next_token_only_when_truncated() -> None:
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    page = (
        f"<ListBucketResult {ns}><Name>b</Name><IsTruncated>true</IsTruncated>"
        "<Contents><Key>m/a.bin</Key><Size>10</Size><Owner><ID>x</ID></Owner></Contents>"
        "<Contents><Key>m/b.bin</Key><Size>20</Size></Contents>"
        "<NextContinuationToken>tok</NextContinuationToken></ListBucketResult>"
    ).encode()
    assert listed_objects(page) == ([("m/a.bin", 10), ("m/b.bin", 20)], "tok")
    last = page.replace(b"<IsTruncated>true", b"<IsTruncated>false")
    assert listed_objects(last)[1] is None


def test_the_first_byte_served_comes_from_content_range() -> None:
    assert first_byte("bytes 100-199/1000") == 100
    assert first_byte(None) == 0
    assert first_byte("items 1-2/3") is None


def test_overlapping_and_repeated_ranges_count_once() -> None:
    r = Ranges()
    assert r.add(0, 100) == 100
    assert r.add(0, 100) == 0  # a retry
    assert r.add(50, 150) == 50  # an overlap
    assert r.add(200, 300) == 100
    assert r.add(150, 200) == 50  # fills the gap: one range again
    assert len(r) == 1 and r.total == 300


def test_scattered_ranges_stay_bounded_and_never_count_less_than_read() -> None:
    r = Ranges()
    for i in range(MAX_RANGES * 3):
        r.add(i * 10, i * 10 + 1)
    assert len(r) <= MAX_RANGES
    assert r.total >= MAX_RANGES * 3


@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 300)), max_size=60))
def test_ranges_total_what_a_set_of_bytes_would(ranges: list[tuple[int, int]]) -> None:
    r, seen, added = Ranges(), set(), 0
    for start, length in ranges:
        added += r.add(start, start + length)
        seen.update(range(start, start + length))
    assert r.total == added == len(seen)
    assert all(a < b for a, b in zip(r.ends, r.starts[1:], strict=False))  # disjoint, not touching
