#!/usr/bin/env bash
# A minimal Debian base for the Dockerfile, assembled from Debian's packages with mmdebstrap: the same
# role python:3.11-slim-bookworm plays elsewhere, for machines that reach Debian's mirrors but no
# container registry. Writes a root filesystem tarball; build.sh imports it. Needs root (or fakeroot).
set -euo pipefail
out=${1:?usage: build-base.sh OUT.tar}
here=$(cd "$(dirname "$0")" && pwd)
suite=${DEBIAN_SUITE:-bookworm}
# essential, not minbase: no apt in an image nobody should apt-get into. usr-is-merged stands in for
# usrmerge, which would pull in all of perl. python3-venv: the Dockerfile's build stage makes a venv;
# libstdc++6: greenlet (SQLAlchemy's asyncio) is C++ (slim images have it, for apt).
mmdebstrap --quiet --variant=essential \
  --include=usr-is-merged,python3,python3-venv,ca-certificates,libstdc++6 \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --customize-hook="$here/trim-base.sh \"\$1\"" \
  "$suite" "$out"
