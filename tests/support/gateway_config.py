"""A gateway's configuration file, written one way for the tests and the benchmarks (`bench/` imports it
as `tests.support.gateway_config`, so it imports nothing else from the tests)."""

from __future__ import annotations

from pathlib import Path


def write_gateway_config(
    path: Path,
    *,
    s3_port: int,
    control_port: int,
    upstream_url: str,
    upstream_key: str,
    store_url: str,
    upstream_secret: str | None = None,
    secret_key_file: str | Path = "server.key",  # noqa: S107 - a file's name
    refresh_interval: float | None = None,
    workers: int | None = None,
    server: str = "",
    upstream: str = "",
    sections: str = "",
) -> Path:
    """Write a gateway's TOML to `path`: its ports (links point at the control port), the bucket it
    fronts, its store. `server`/`upstream`: more lines for those sections; `sections`: whole sections
    appended (a `[policy]`, `[audit]`, `[sts]`...). Relative paths in it resolve from `path`'s folder."""
    server_lines = [
        f"s3_port = {s3_port}",
        f"control_port = {control_port}",
        f'public_url = "http://127.0.0.1:{control_port}"',
        f'secret_key_file = "{secret_key_file}"',
    ]
    if refresh_interval is not None:
        server_lines.append(f"refresh_interval_seconds = {refresh_interval}")
    if workers is not None:
        server_lines.append(f"workers = {workers}")
    path.write_text(
        "[server]\n"
        + "\n".join(server_lines)
        + f"\n{server}\n\n"
        + f'[upstream]\nendpoint_url = "{upstream_url}"\n'
        + f'access_key_id = "{upstream_key}"\nsecret_access_key = "{upstream_secret or upstream_key}"\n'
        + f"{upstream}\n\n"
        + f'[store]\nurl = "{store_url}"\n\n'
        + sections
        + "\n"
    )
    return path
