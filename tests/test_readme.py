"""What README.md tells users agrees with what the code does."""

from __future__ import annotations

import re

from support.world import ROOT


def sentences_about(word: str) -> list[str]:
    text = " ".join((ROOT / "README.md").read_text().split())
    return [s for s in re.split(r"(?<=\.)\s", text) if word in s]


def test_readme_says_source_cidrs_are_enforced_everywhere_it_mentions_them() -> None:
    # tests/e2e/test_source_networks.py shows the gateway refusing requests from other networks.
    found = sentences_about("source_cidrs")
    assert found
    for sentence in found:
        assert not re.search(r"not (yet )?(enforce|refuse)", sentence), sentence
    assert any("enforce" in s for s in found)
