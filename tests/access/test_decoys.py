"""Which requests touch a decoy (pure), and how decoys are configured per resource."""

from __future__ import annotations

import timeit

import pytest
from pydantic import ValidationError

from proxy.access.decoys import DecoySet
from proxy.access.grants import Action, Scope, Target
from proxy.access.policy_config import PolicySettings

DECOYS = DecoySet(
    [
        ("archive", "models/llama-3-70b-instruct/model-00001-of-00030.safetensors"),
        ("archive", "models/mistral-large-2/"),
    ]
)


def read(key: str, bucket: str = "archive") -> Target:
    return Target(Action.READ, bucket, key, Scope.OBJECT)


def test_a_read_of_a_decoy_key_or_of_anything_under_a_decoy_prefix_is_a_touch() -> None:
    assert DECOYS.touched([read("models/llama-3-70b-instruct/model-00001-of-00030.safetensors")])
    assert DECOYS.touched([read("models/mistral-large-2/consolidated.safetensors")])


def test_real_objects_siblings_and_other_buckets_are_not_decoys() -> None:
    assert DECOYS.touched([read("models/llama-3-70b-instruct/model-00002-of-00030.safetensors")]) is None
    assert DECOYS.touched([read("models/mistral-large-2")]) is None  # the prefix is "…-2/"
    assert DECOYS.touched([read("models/mistral-large-2/x", bucket="other")]) is None


def test_a_copy_whose_source_is_a_decoy_is_a_touch() -> None:
    copy = [
        Target(Action.WRITE, "archive", "scratch/stolen.safetensors"),
        read("models/mistral-large-2/model.safetensors"),
    ]
    touched = DECOYS.touched(copy)
    assert (
        touched is not None and touched.describe() == "s3://archive/models/mistral-large-2/model.safetensors"
    )


def test_listing_a_decoy_prefix_is_not_a_touch() -> None:
    listing = Target(Action.LIST, "archive", "models/mistral-large-2/", Scope.PREFIX)
    assert DECOYS.touched([listing]) is None


def test_decoys_are_configured_inside_their_resource() -> None:
    policy = PolicySettings.model_validate(
        {
            "resources": {
                "models": {
                    "paths": ["s3://archive/models/"],
                    "decoys": ["s3://archive/models/mistral-large-2/", "s3://archive/models/x.gguf"],
                }
            }
        }
    )
    assert policy.decoys().entries() == [
        ("archive", "models/mistral-large-2/"),
        ("archive", "models/x.gguf"),
    ]
    # Requesters never see them: the policy's resources carry paths and descriptions only.
    assert "decoy" not in repr(policy.build().resources)


@pytest.mark.parametrize("decoy", ["s3://archive/data/x.bin", "s3://other/models/x.bin", "s3://archive/"])
def test_a_decoy_outside_its_resource_or_naming_nothing_is_refused_at_start(decoy: str) -> None:
    with pytest.raises(ValidationError, match="decoy"):
        PolicySettings.model_validate(
            {"resources": {"models": {"paths": ["s3://archive/models/"], "decoys": [decoy]}}}
        )


def test_the_lookup_costs_well_under_a_microsecond() -> None:
    """It runs on every request: a dict, a set and one startswith over the bucket's decoy prefixes."""
    many = DecoySet([("archive", f"models/decoy-{i}/") for i in range(50)])
    targets = [read("models/llama-3-8b/model-00001-of-00004.safetensors")]
    per_call = min(timeit.repeat(lambda: many.touched(targets), number=10_000, repeat=5)) / 10_000
    assert per_call < 20e-6  # generous for a loaded CI machine; measured ~0.5 µs
