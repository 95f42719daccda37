"""The STS form: only AssumeRoleWithWebIdentity, with STS's own parameter rules; answers in STS's XML."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.parsers import QueryParser
from botocore.session import get_session

from proxy.identity.principals import Principal
from proxy.identity.sessions import TemporaryCredentials
from proxy.identity.sts import Assumed, error_response, parse_request, success_xml
from proxy.identity.webidentity import IdentityError, WebIdentity

FORM = {
    "Action": "AssumeRoleWithWebIdentity",
    "Version": "2011-06-15",
    "RoleArn": "arn:aws:iam::000000000000:role/grantgate",
    "RoleSessionName": "trainer-1",
    "WebIdentityToken": "a.b.c",
}
OPERATION = get_session().get_service_model("sts").operation_model("AssumeRoleWithWebIdentity")


def code_for(form: dict[str, str]) -> str:
    with pytest.raises(IdentityError) as exc:
        parse_request(form)
    return exc.value.code


def test_valid_form_is_parsed() -> None:
    request = parse_request({**FORM, "DurationSeconds": "7200"})
    assert (request.session_name, request.token, request.duration_seconds) == ("trainer-1", "a.b.c", 7200)
    assert parse_request(FORM).duration_seconds is None


@pytest.mark.parametrize("action", ["AssumeRole", "GetCallerIdentity", "GetSessionToken", ""])
def test_every_other_action_is_refused(action: str) -> None:
    assert code_for({**FORM, "Action": action}) == "InvalidAction"


def test_parameters_are_checked_as_sts_does() -> None:
    assert code_for({k: v for k, v in FORM.items() if k != "Action"}) == "MissingAction"
    assert code_for({**FORM, "Version": "2012-01-01"}) == "InvalidParameterValue"
    assert code_for({k: v for k, v in FORM.items() if k != "WebIdentityToken"}) == "MissingParameter"
    assert code_for({**FORM, "RoleSessionName": "has space"}) == "ValidationError"
    assert code_for({**FORM, "RoleArn": "short"}) == "ValidationError"
    assert code_for({**FORM, "DurationSeconds": "60"}) == "ValidationError"
    assert code_for({**FORM, "DurationSeconds": "1e4"}) == "ValidationError"
    assert code_for({**FORM, "Policy": "{}"}) == "InvalidParameterValue"


def test_success_document_parses_with_botocore() -> None:
    expiration = datetime(2030, 1, 1, 13, 0, tzinfo=UTC)
    assumed = Assumed(
        identity=WebIdentity("https://issuer", "system:serviceaccount:ml:t", "grantgate", {}, expiration),
        principal=Principal("system:serviceaccount:ml:t"),
        credentials=TemporaryCredentials("GGTABC", "sec<ret>&", "ggs1.tok", expiration),
        role_arn=FORM["RoleArn"],
        session_name="trainer-1",
    )
    body = success_xml(assumed, "REQ1")
    parsed = QueryParser().parse({"body": body, "headers": {}, "status_code": 200}, OPERATION.output_shape)
    assert parsed["Credentials"]["SecretAccessKey"] == "sec<ret>&"
    assert parsed["Credentials"]["Expiration"] == expiration
    assert parsed["SubjectFromWebIdentityToken"] == "system:serviceaccount:ml:t"
    assert parsed["ResponseMetadata"]["RequestId"] == "REQ1"


def test_error_document_parses_with_botocore() -> None:
    response = error_response(IdentityError("InvalidIdentityToken", "Incorrect token audience."), "REQ2")
    assert response.status == 400
    parsed = QueryParser().parse({"body": response.body, "headers": {}, "status_code": 400}, None)
    assert parsed["Error"]["Code"] == "InvalidIdentityToken"
    assert parsed["Error"]["Message"] == "Incorrect token audience."
