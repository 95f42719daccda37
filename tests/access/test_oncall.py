"""Reading PagerDuty's answers (pure): the service's escalation policy, and who on an on-call page counts."""

from __future__ import annotations

import pytest
from support.fake_pagerduty import oncall_entry

from proxy.access.oncall import PagerDutySettings, UnexpectedAnswer, escalation_policy_of, principals_on_call

SETTINGS = PagerDutySettings(
    users={"PMAPPED": "svc-ml"}, email_principal="local_part", email_domains=["Example.com"]
)


def test_on_call_principals_are_the_first_levels_mapped_by_id_or_email_domain() -> None:
    page = {
        "oncalls": [
            oncall_entry("P1", "ada@example.com", "EP"),
            oncall_entry("P2", "bob@example.com", "EP", level=2),
            oncall_entry("P3", "eve@evil.example.org", "EP"),
            oncall_entry("PMAPPED", "whoever@elsewhere.org", "EP"),
        ],
        "more": False,
    }
    assert principals_on_call(page, SETTINGS) == {"ada", "svc-ml"}
    assert principals_on_call(page, SETTINGS.model_copy(update={"max_escalation_level": 2})) == {
        "ada",
        "bob",
        "svc-ml",
    }
    assert principals_on_call(page, PagerDutySettings()) == frozenset()  # no mapping: nobody


@pytest.mark.parametrize("page", [{}, {"oncalls": "x"}, {"oncalls": [{"escalation_level": 1}]}])
def test_an_unexpected_on_call_answer_is_refused(page: dict) -> None:
    with pytest.raises(UnexpectedAnswer):
        principals_on_call(page, SETTINGS)


def test_the_service_names_its_escalation_policy() -> None:
    assert escalation_policy_of({"service": {"escalation_policy": {"id": "PEP1"}}}) == "PEP1"
    for bad in ({}, {"service": {}}, {"service": {"escalation_policy": {"id": 3}}}):
        with pytest.raises(UnexpectedAnswer):
            escalation_policy_of(bad)


def test_local_part_needs_domains_and_enabled_needs_a_token() -> None:
    with pytest.raises(ValueError, match="email_domains"):
        PagerDutySettings(email_principal="local_part")
    with pytest.raises(ValueError, match="token"):
        PagerDutySettings(enabled=True)
