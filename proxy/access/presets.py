"""`grantgate init --preset`: complete, commented configs for the three team sizes GrantGate is built for.

small (under 10 people): anyone may ask, with a justification; one admin approves.
growing (10-100): infra is approved instantly; others give a reason and need one approval.
large (100+): only the owning teams may ask; two approvals from two groups; networks; break-glass.
"""

from __future__ import annotations

PRESETS = ("small", "growing", "large")

_HEADER = """\
# GrantGate configuration: the "{preset}" preset ({audience}).
# Written by `grantgate init --preset {preset}`. Every setting of config.example.toml may be added.
# Relative paths are resolved from this file's directory.

[server]
# The S3 listener: point clients' endpoint_url here.
s3_host = "127.0.0.1"
s3_port = 9000
# The control listener: the JSON API (/api/v1), the access-request pages, health probes.
control_host = "127.0.0.1"
control_port = 9001
# Where people reach the control listener: the link in every 403 starts with it.
public_url = "http://127.0.0.1:9001"
# The server secret (at least 32 characters). GRANTGATE_SECRET_KEY in the environment wins over this.
secret_key_file = "{key_file}"

[upstream]
# The real bucket's endpoint. Empty: AWS S3 in `region`, with botocore's usual credential chain
# (environment, profile, IRSA / web identity, instance metadata).
endpoint_url = ""
region = "us-east-1"

[store]
# SQLite for one gateway; PostgreSQL when several gateways share the state.
url = "{store_url}"

[log]
level = "info"
format = "json"

[web]
# Sign-in for the pages the link in every 403 opens (the request form, My access, the approvers'
# inbox). Until one method below is filled in, that link ends at "No sign-in method is configured".
session_hours = 8

[web.oidc]
# OpenID Connect (Okta, Entra ID, Google, Keycloak, Dex...): register a web client whose redirect URI
# is public_url + "/signin/oidc/callback", then fill in the two lines below. Empty issuer: off.
issuer = ""
client_id = ""
# The client secret, one line (or GRANTGATE_OIDC_CLIENT_SECRET in the environment).
client_secret_file = "oidc-client-secret"
# The ID token claim listing the person's groups (the policy's group names).
groups_claim = "groups"

[web.trusted_headers]
# Or an SSO proxy (oauth2-proxy...) in front of the control listener that sets X-Forwarded-User and
# X-Forwarded-Groups: enable it and list the proxy's addresses (headers from anyone else are ignored).
enabled = false
proxies = []

[slack]
# Approve / Deny buttons in Slack, DMs to requesters, alerts to security (docs/slack.md). Prefer
# GRANTGATE_SLACK_BOT_TOKEN and GRANTGATE_SLACK_SIGNING_SECRET in the environment to writing them here.
enabled = false
# Where new requests for each resource are posted (resource name -> channel); the others go to
# default_channel. Break-glass use and anomaly alerts go to security_channel.
channels = {{}}
default_channel = ""
security_channel = ""

[audit]
# The tamper-evident trail in the store: one hash-chained record per S3 request and per workflow
# event (`grantgate audit`, `grantgate audit verify`). Who may read all of it through the API,
# besides admin_groups:
enabled = true
data_plane = "requests"
reader_groups = {audit_readers}
# Batches wait here (fsync'd) while the store is unreachable; relative to this file.
spool_dir = "audit-spool"

[metrics]
# Prometheus text at /metrics on the control listener (and on a port of its own with `port`).
enabled = true
path = "/metrics"
port = 0
# One series per principal: keep off for large populations.
per_principal = false

# ---------------------------------------------------------------------------------------------------
# Access policy. A request names an s3://bucket/prefix inside one of the resources below; the first
# rule of that resource (in file order) that admits the requester's groups and allows every action
# asked for decides it. Group names come from `grantgate keys create NAME --group GROUP` (or your
# identity provider); "*" means every authenticated principal.
# ---------------------------------------------------------------------------------------------------
"""

_SMALL = """\
[policy]
# A request nobody decides within this time expires.
pending_ttl = "24h"
# Holders are warned this long before a grant ends.
expiry_warning = "15m"
# Admins may decide any request and revoke any grant.
admin_groups = ["admins"]

[policy.resources.models]
description = "Model weights"
paths = ["s3://{bucket}/models/"]

[policy.resources.datasets]
description = "Training and evaluation data"
paths = ["s3://{bucket}/datasets/"]

# Anyone may ask to read; a short justification is required and one admin approves.
[[policy.rules]]
resource = "models"
requester_groups = ["*"]
actions = ["read", "list"]
default_duration = "4h"
max_duration = "24h"
justification_required = true
justification_min_length = 10
approver_groups = ["admins"]
approvals_required = 1

[[policy.rules]]
resource = "datasets"
requester_groups = ["*"]
actions = ["read", "list", "write"]
default_duration = "4h"
max_duration = "24h"
justification_required = true
justification_min_length = 10
approver_groups = ["admins"]
approvals_required = 1
"""

_GROWING = """\
[policy]
pending_ttl = "24h"
expiry_warning = "15m"
admin_groups = ["security"]

[policy.resources.models]
description = "Released model weights"
paths = ["s3://{bucket}/models/"]

[policy.resources.training-data]
description = "Fine-tuning and RLHF data (sensitive)"
paths = ["s3://{bucket}/training-data/"]

# Reading models: the infra team is approved instantly, for a working day at most; everyone else
# gives a written reason and waits for one approval from infra or security. Weights are what leaks:
# nobody outside infra holds them without someone else having looked.
[[policy.rules]]
resource = "models"
requester_groups = ["*"]
actions = ["read", "list"]
default_duration = "4h"
max_duration = "8h"
justification_required = true
justification_min_length = 20
instant_groups = ["infra"]
approver_groups = ["infra", "security"]
approvals_required = 1

# Publishing models: infra instantly, ML engineers with one approval from infra.
[[policy.rules]]
resource = "models"
requester_groups = ["infra", "ml"]
actions = ["read", "list", "write"]
default_duration = "2h"
max_duration = "8h"
justification_required = true
justification_min_length = 15
instant_groups = ["infra"]
approver_groups = ["infra"]
approvals_required = 1

# Training data: one approval from the data owners, whoever asks (infra included).
[[policy.rules]]
resource = "training-data"
requester_groups = ["ml", "infra", "research"]
actions = ["read", "list"]
default_duration = "4h"
max_duration = "2d"
justification_required = true
justification_min_length = 20
approver_groups = ["data-owners"]
approvals_required = 1

# Services that always need access: still audited, revoked when removed from this list.
[[policy.standing]]
principal = "inference-server"
resource = "models"
actions = ["read", "list"]
"""

_LARGE = """\
[policy]
pending_ttl = "12h"
expiry_warning = "30m"
admin_groups = ["security-admins"]

[policy.resources.models]
description = "Released model weights"
paths = ["s3://{bucket}/models/"]

[policy.resources.checkpoints]
description = "Unreleased training checkpoints"
paths = ["s3://{bucket}/checkpoints/"]

[policy.resources.training-data]
description = "Training data with personal information"
paths = ["s3://{bucket}/training-data/", "s3://{bucket}/rlhf/"]

# Only the teams that own the work may ask; two distinct approvers, from security or the model's
# owners; grants may only be used from the corporate and cluster networks.
[[policy.rules]]
resource = "models"
requester_groups = ["ml-platform", "applied-ml", "eval"]
actions = ["read", "list"]
default_duration = "4h"
max_duration = "8h"
justification_required = true
justification_min_length = 30
instant_groups = ["ml-platform"]
approver_groups = ["security", "model-owners"]
approvals_required = 2
source_cidrs = ["10.0.0.0/8"]
# On-call engineers may take emergency access without approval: instant, alerted to everyone,
# reviewed afterwards by security.
break_glass = true

[[policy.rules]]
resource = "checkpoints"
requester_groups = ["ml-platform", "pretraining"]
actions = ["read", "list", "write"]
default_duration = "2h"
max_duration = "12h"
justification_required = true
justification_min_length = 30
approver_groups = ["security", "model-owners"]
approvals_required = 2
source_cidrs = ["10.0.0.0/8"]
break_glass = true

[[policy.rules]]
resource = "training-data"
requester_groups = ["data-science", "pretraining"]
actions = ["read", "list"]
default_duration = "2h"
max_duration = "8h"
justification_required = true
justification_min_length = 40
approver_groups = ["privacy", "security"]
approvals_required = 2
source_cidrs = ["10.0.0.0/8"]

[[policy.standing]]
principal = "inference-fleet"
resource = "models"
actions = ["read", "list"]

[[policy.standing]]
principal = "training-scheduler"
resource = "checkpoints"
actions = ["read", "list", "write"]
"""

_POLICIES = {"small": _SMALL, "growing": _GROWING, "large": _LARGE}
_AUDIT_READERS = {"small": "[]", "growing": '["security"]', "large": '["security", "audit"]'}
_AUDIENCE = {"small": "under 10 people", "growing": "10 to 100 people", "large": "100 people and more"}
_STORE = {
    "small": "sqlite:///grantgate.db",
    "growing": "sqlite:///grantgate.db",
    "large": "postgresql://grantgate@db.internal/grantgate",
}


def render_preset(preset: str, *, bucket: str = "my-ml-bucket", key_file: str = "grantgate.key") -> str:
    """The config file text for `preset`; ValueError for an unknown preset name."""
    if preset not in _POLICIES:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    header = _HEADER.format(
        preset=preset,
        audience=_AUDIENCE[preset],
        key_file=key_file,
        store_url=_STORE[preset],
        audit_readers=_AUDIT_READERS[preset],
    )
    return header + "\n" + _POLICIES[preset].format(bucket=bucket)
