"""The aws cli (v1) run as a user would, in a clean environment, against one of the world's gateways."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from support.world import Identity, World

AWS = Path(sys.executable).with_name("aws")


@dataclass(frozen=True)
class Cli:
    """One person's aws cli, pointed at one gateway."""

    env: dict[str, str]
    endpoint: str
    ca_bundle: Path | None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        tls = ["--ca-bundle", str(self.ca_bundle)] if self.ca_bundle else []
        return subprocess.run(
            [str(AWS), *args, "--endpoint-url", self.endpoint, *tls],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def denied(self, *args: str, code: str = "AccessDenied") -> str:
        done = self.run(*args)
        assert done.returncode != 0, f"aws {' '.join(args)} unexpectedly succeeded:\n{done.stdout}"
        assert code in done.stderr, done.stderr
        return done.stderr


# aws cli v1 presigns S3 URLs with SigV2 unless configured otherwise; the gateway accepts only SigV4.
SIGV4_CONFIG = "[default]\ns3 =\n    signature_version = s3v4\n"


def cli_for(world: World, who: Identity, tls: bool, home: Path, config: str = "") -> Cli:
    home.mkdir(exist_ok=True)
    (home / "config").write_text(config)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_ACCESS_KEY_ID": who.access_key_id,
        "AWS_SECRET_ACCESS_KEY": who.secret_access_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    gateway = world.https if tls else world.http
    return Cli(env, gateway.s3_url, world.ca_bundle if tls else None)
