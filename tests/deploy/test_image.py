"""The OCI image, run the way the Helm chart runs it: the gateway container of the rendered Deployment
(its user, arguments, environment, config file and volumes) on the image's root filesystem, mounted
read-only, against moto on this machine's loopback; then an end-to-end smoke through it with boto3.

`make image` (deploy/image/build.sh) builds the image with buildah and unpacks it into build/image/.
No container runtime is needed to run it: the root filesystem is entered with unshare + chroot, as
root, which is what a runtime does minus the cgroups. CI builds the image, so there a missing one fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError
from support import tools
from support.observed import eventually, scrape
from support.world import BUCKET, ROOT, UPSTREAM_KEY, free_port, wait_http

IMAGE = Path(os.environ.get("GRANTGATE_IMAGE_DIR", ROOT / "build" / "image"))
CHART = ROOT / "deploy" / "helm" / "grantgate"
UPLOAD_BYTES = 64 * 1024 * 1024


# --- the image and the chart, as data ---------------------------------------------------------------


def built_image() -> Path:
    if (IMAGE / "rootfs").is_dir() and (IMAGE / "config.json").is_file():
        return IMAGE
    how = "run `make image` (deploy/image/build.sh: buildah and mmdebstrap, as root)"
    if os.environ.get("CI"):
        pytest.fail(f"the image is not built, and CI must build it: {how}")
    pytest.skip(f"the image is not built: {how}")


def image_config() -> dict[str, Any]:
    return dict(json.loads((built_image() / "config.json").read_text()))


def rendered_chart(values: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    path = directory / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [tools.helm(), "template", "gg", str(CHART), "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@dataclass(frozen=True)
class Pod:
    """What the chart asks the container runtime for, for the gateway container."""

    container: dict[str, Any]
    pod_security: dict[str, Any]
    volumes: dict[str, dict[str, Any]]
    config_toml: str

    @classmethod
    def from_chart(cls, docs: list[dict[str, Any]]) -> Pod:
        spec = only(docs, "Deployment")["spec"]["template"]["spec"]
        (gateway,) = [c for c in spec["containers"] if c["name"] == "gateway"]
        return cls(
            gateway,
            spec["securityContext"],
            {v["name"]: v for v in spec["volumes"]},
            only(docs, "ConfigMap")["data"]["config.toml"],
        )

    def writable_mounts(self) -> set[str]:
        return {m["mountPath"] for m in self.container["volumeMounts"] if not m.get("readOnly")}


# --- running it -------------------------------------------------------------------------------------


@dataclass
class Container:
    """The image's root filesystem, read-only, with the pod's volumes mounted, as the pod's user."""

    rootfs: Path
    user: str
    env: dict[str, str]
    mounts: dict[str, tuple[Path, bool]]  # path in the container -> (host directory, read-only)

    def command(self, argv: list[str]) -> list[str]:
        """unshare + chroot (through `sudo -n` when not root); the environment and argv go as arguments."""
        root = shlex.quote(str(self.rootfs))
        uid, gid = self.user.split(":")
        steps = ["set -e", "mount --make-rprivate /", f"mount --bind {root} {root}"]
        for target, (source, read_only) in self.mounts.items():
            # As a runtime does: the mount point is made, and fsGroup owns the writable volumes.
            inside, outside = shlex.quote(str(self.rootfs) + target), shlex.quote(str(source))
            steps.append(f"mkdir -p {inside}")
            if not read_only:
                steps.append(f"chown {uid}:{gid} {outside}")
            steps.append(f"mount --bind {outside} {inside}")
            if read_only:
                steps.append(f"mount -o remount,bind,ro {inside}")
        steps += [
            f"mount -t proc proc {root}/proc",
            f"mount --rbind /dev {root}/dev",
            f"mount -o remount,bind,ro {root}",
            f'exec chroot --userspec={uid}:{gid} {root} /usr/bin/env -i "$@"',
        ]
        env = [f"{k}={v}" for k, v in self.env.items()]
        return [*self._sudo(), "unshare", "--mount", "--pid", "--fork", "--kill-child", "--", "/bin/sh", "-c",
                "; ".join(steps), "container", *env, *argv]  # fmt: skip

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """`kubectl exec`: one more process in the same filesystem, as the same user."""
        return subprocess.run(self.command(argv), capture_output=True, text=True, timeout=60, check=False)

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(self.command(argv), stdout=out, stderr=subprocess.STDOUT)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the container's first process, as a runtime does. Not through unshare: it ignores
        SIGTERM while it waits, and its child, having changed user, no longer gets a parent-death signal."""
        first = proc.pid
        while _command_name(first) in ("sudo", "unshare"):
            children = Path(f"/proc/{first}/task/{first}/children").read_text().split()
            if not children:
                break
            first = int(children[0])
        subprocess.run([*self._sudo(), "kill", "-TERM", str(first)], capture_output=True, check=False)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            subprocess.run([*self._sudo(), "kill", "-KILL", str(first)], capture_output=True, check=False)
            proc.wait(10)

    @staticmethod
    def _sudo() -> list[str]:
        return [] if os.geteuid() == 0 else ["sudo", "-n"]


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def container_for(pod: Pod, image: Path, directory: Path, secrets_: dict[str, str]) -> Container:
    config = image_config()
    volumes: dict[str, tuple[Path, bool]] = {}
    for mount in pod.container["volumeMounts"]:
        host = directory / "volumes" / mount["name"]
        host.mkdir(parents=True, exist_ok=True)
        volume = pod.volumes[mount["name"]]
        if "configMap" in volume:
            (host / "config.toml").write_text(pod.config_toml)
        else:
            assert "emptyDir" in volume, volume
        volumes[mount["mountPath"]] = (host, bool(mount.get("readOnly")))
    env = dict(item.split("=", 1) for item in config["Env"])
    for item in pod.container.get("env", []):
        env[item["name"]] = item.get("value") or secrets_[item["name"]]
    for source in pod.container.get("envFrom", []):
        assert "secretRef" in source
        env.update({k: v for k, v in secrets_.items() if k.startswith("AWS_")})
    security = {**pod.pod_security, **pod.container["securityContext"]}
    user = f"{security['runAsUser']}:{security['runAsGroup']}"
    return Container(image / "rootfs", user, env, volumes)


def can_enter_containers() -> None:
    """Root, or sudo without a password (CI), with util-linux's unshare and coreutils' chroot."""
    root = os.geteuid() == 0 or (
        shutil.which("sudo") is not None
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    )
    if root and shutil.which("unshare") and shutil.which("chroot"):
        return
    if os.environ.get("CI"):
        pytest.fail("running the image needs root (or sudo -n) with unshare and chroot")
    pytest.skip("running the image needs root (or sudo -n) with unshare and chroot")


@dataclass
class Deployed:
    pod: Pod
    container: Container
    s3_url: str
    control_url: str
    upstream_url: str
    started_in: float


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    image = built_image()
    can_enter_containers()
    from moto.server import ThreadedMotoServer

    directory = tmp_path_factory.mktemp("image")
    moto_port, s3_port, control_port = free_port(), free_port(), free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    upstream_url = f"http://127.0.0.1:{moto_port}"
    control_url = f"http://127.0.0.1:{control_port}"
    values = {
        "ports": {"s3": s3_port, "control": control_port},
        "publicUrl": control_url,
        "upstream": {"endpointUrl": upstream_url, "existingSecret": "upstream-credentials"},
        "config": {"server": {"workers": 2, "refresh_interval_seconds": 0.2}},
    }
    pod = Pod.from_chart(rendered_chart(values, directory))
    secrets_ = {
        "GRANTGATE_SECRET_KEY": secrets.token_urlsafe(48),
        # The chart turns the /metrics bearer token on by default (its own generated Secret).
        "GRANTGATE_METRICS_TOKEN": secrets.token_urlsafe(32),
        "AWS_ACCESS_KEY_ID": UPSTREAM_KEY,
        "AWS_SECRET_ACCESS_KEY": UPSTREAM_KEY,
    }
    container = container_for(pod, image, directory, secrets_)
    s3 = boto3.client(
        "s3", endpoint_url=upstream_url, aws_access_key_id=UPSTREAM_KEY,
        aws_secret_access_key=UPSTREAM_KEY, region_name="us-east-1",
    )  # fmt: skip
    s3.create_bucket(Bucket=BUCKET)
    config = image_config()
    argv = config["Entrypoint"] + pod.container.get("args", config["Cmd"])
    started = time.monotonic()
    proc = container.start(argv, directory / "gateway.log")
    try:
        try:
            wait_http(control_url + "/readyz", timeout=60)
        except TimeoutError:
            raise AssertionError((directory / "gateway.log").read_text()[-4000:]) from None
        took = time.monotonic() - started
        yield Deployed(pod, container, f"http://127.0.0.1:{s3_port}", control_url, upstream_url, took)
    finally:
        container.stop(proc)
        moto.stop()


def gateway_client(deployed: Deployed, key: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=deployed.s3_url,
        aws_access_key_id=key["access_key_id"],
        aws_secret_access_key=key["secret_access_key"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def grantgate(deployed: Deployed, *args: str) -> str:
    """The CLI inside the running image, with the pod's config (what `kubectl exec` would run)."""
    argv = [*image_config()["Entrypoint"], *deployed.pod.container["args"][:2], *args]
    done = deployed.container.run(argv)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- the tests --------------------------------------------------------------------------------------


def test_the_chart_runs_the_image_as_its_own_user_on_its_own_ports(tmp_path: Path) -> None:
    config = image_config()
    docs = rendered_chart({}, tmp_path)
    pod = Pod.from_chart(docs)
    uid, gid = config["User"].split(":")
    assert (pod.pod_security["runAsUser"], pod.pod_security["runAsGroup"]) == (int(uid), int(gid))
    assert pod.pod_security["runAsNonRoot"] and int(uid) != 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    exposed = {int(port.split("/")[0]) for port in config["ExposedPorts"]}
    assert exposed == {values["ports"]["s3"], values["ports"]["control"]}
    assert {p["containerPort"] for p in pod.container["ports"]} == exposed
    # The chart gives arguments only: the image's entrypoint is what runs them.
    assert "command" not in pod.container and config["Entrypoint"] == ["grantgate"]
    assert pod.container["securityContext"]["readOnlyRootFilesystem"] is True
    # Writable: the image's working directory, and SQLite's file where the default store URL puts it.
    assert pod.writable_mounts() == {config["WorkingDir"], "/data"}
    assert values["store"]["url"] == "sqlite:////data/grantgate.db"
    assert pod.container["args"][:2] == ["--config", "/etc/grantgate/config.toml"]
    # The sidecar's startup probe runs `python` from the image's PATH.
    assert (built_image() / "rootfs" / "opt/grantgate/bin/python").exists()
    assert any(item.startswith("PATH=/opt/grantgate/bin:") for item in config["Env"])


def test_the_root_filesystem_is_read_only_and_the_volumes_are_not(deployed: Deployed) -> None:
    probe = (
        "import os\n"
        "for path in ('/opt/grantgate/x', '/etc/grantgate/x', '/tmp/x', '/data/x'):\n"
        "    try:\n"
        "        open(path, 'w').close(); os.remove(path); print(path, 'writable')\n"
        "    except OSError as exc:\n"
        "        print(path, exc.strerror)\n"
        "print('uid', os.getuid(), os.getgid())\n"
    )
    done = deployed.container.run(["python", "-c", probe])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "/opt/grantgate/x Read-only file system",
        "/etc/grantgate/x Read-only file system",
        "/tmp/x writable",
        "/data/x writable",
        "uid 10001 10001",
    ]


def test_smoke_through_the_image(deployed: Deployed) -> None:
    who = f"smoke-{secrets.token_hex(3)}"
    key = json.loads(grantgate(deployed, "keys", "create", who, "--json"))
    s3 = gateway_client(deployed, key)
    prefix = f"datasets/{who}/"
    refusals: list[dict[str, str]] = []

    def key_known() -> bool:
        """The CLI wrote the key to the store behind the gateway's back: each worker sees it within
        its refresh interval (0.2 s here), not at once."""
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=BUCKET, Key=prefix + "weights.bin", Body=b"x")
        refusals.append(denied.value.response["Error"])
        assert refusals[-1]["Code"] in ("AccessDenied", "InvalidAccessKeyId"), refusals[-1]
        return refusals[-1]["Code"] == "AccessDenied"

    # Denied, with the link to ask for access.
    eventually(key_known, timeout=10, what="the workers to load the new key")
    assert f"{deployed.control_url}/request?resource=" in refusals[-1]["Message"]
    grantgate(deployed, "grants", "add", who, f"s3://{BUCKET}/{prefix}", "--actions", "read,write",
              "--duration", "1h")  # fmt: skip

    def allowed() -> bool:
        try:
            s3.put_object(Bucket=BUCKET, Key=prefix + "probe", Body=b"p")
        except ClientError as err:
            assert err.response["Error"]["Code"] == "AccessDenied"
            return False
        return True

    eventually(allowed, timeout=20, what="both workers to load the grant")
    body = secrets.token_bytes(UPLOAD_BYTES)
    s3.upload_fileobj(io.BytesIO(body), BUCKET, prefix + "weights.bin")
    upstream = boto3.client(
        "s3", endpoint_url=deployed.upstream_url, aws_access_key_id=UPSTREAM_KEY,
        aws_secret_access_key=UPSTREAM_KEY, region_name="us-east-1",
    )  # fmt: skip
    assert upstream.head_object(Bucket=BUCKET, Key=prefix + "weights.bin")["ContentLength"] == UPLOAD_BYTES
    fetched = s3.get_object(Bucket=BUCKET, Key=prefix + "weights.bin")["Body"].read()
    assert hashlib.sha256(fetched).digest() == hashlib.sha256(body).digest()
    with urllib.request.urlopen(deployed.control_url + "/readyz", timeout=5) as resp:
        assert resp.status == 200 and json.load(resp)["state_version"] >= 1
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(deployed.control_url)
    assert refused.value.code == 401
    samples = scrape(deployed.control_url, deployed.container.env["GRANTGATE_METRICS_TOKEN"])
    sent = sum(v for (name, _), v in samples.items() if name == "grantgate_s3_sent_bytes_total")
    received = sum(v for (name, _), v in samples.items() if name == "grantgate_s3_received_bytes_total")
    assert sent >= UPLOAD_BYTES and received >= UPLOAD_BYTES
    denials = sum(v for (name, _), v in samples.items() if name == "grantgate_s3_denials_total")
    assert denials >= 1


def test_the_image_starts_quickly(deployed: Deployed) -> None:
    print(f"image start to /readyz: {deployed.started_in:.2f} s")
    assert deployed.started_in < 30
