#!/usr/bin/env bash
# Builds the repository's Dockerfile into an OCI image without a daemon or a registry, then unpacks it
# for the tests (tests/deploy/test_image.py runs it as the Helm chart would):
#   OUT/base.tar        the Debian base (build-base.sh), imported as localhost/grantgate-base
#   OUT/grantgate.tar   the image, an OCI archive (podman load / skopeo copy it anywhere)
#   OUT/rootfs/         its root filesystem, OUT/config.json its OCI config (user, entrypoint, env...)
# Needs root for buildah's vfs storage and chroot isolation (CI runs it under sudo when not root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$(mkdir -p "${1:-$root/build/image}" && cd "${1:-$root/build/image}" && pwd)
tag=${IMAGE_TAG:-localhost/grantgate:ci}
base=localhost/grantgate-base:bookworm
bah() { buildah --storage-driver vfs "$@"; }
seconds() { echo "$(($(date +%s) - $1))s"; }

t=$(date +%s)
if [ ! -s "$out/base.tar" ] || [ "$here/build-base.sh" -nt "$out/base.tar" ] || [ "$here/trim-base.sh" -nt "$out/base.tar" ]; then
  bash "$here/build-base.sh" "$out/base.part.tar"
  mv "$out/base.part.tar" "$out/base.tar"
fi
echo "base: $(seconds "$t")"

t=$(date +%s)
container=$(bah from scratch)
bah add --quiet "$container" "$out/base.tar" /
bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd python3 "$container"
bah commit --quiet --rm "$container" "$base" >/dev/null
# The build stage fetches wheels from PyPI: its RUN steps trust what this machine trusts (a TLS-inspecting
# proxy's CA, say) through a read-only mount that is never part of the image.
ca=/etc/ssl/certs/ca-certificates.crt
bah bud --quiet --isolation chroot --layers=false --build-arg "PYTHON_IMAGE=$base" -t "$tag" \
  $([ -s "$ca" ] && echo "--volume $ca:$ca:ro") -f "$root/Dockerfile" "$root" >/dev/null
echo "image: $(seconds "$t")"

t=$(date +%s)
rm -rf "$out/rootfs" "$out/grantgate.tar"
bah push --quiet "$tag" "oci-archive:$out/grantgate.tar:$tag"
bah inspect --type image "$tag" | python3 -c 'import json, sys; json.dump(json.load(sys.stdin)["OCIv1"]["config"], sys.stdout, indent=1)' >"$out/config.json"
container=$(bah from "$tag")
mkdir -p "$out/rootfs"
( mount=$(bah mount "$container") && tar -C "$mount" -cf - . | tar -C "$out/rootfs" -xf - )
bah umount "$container" >/dev/null
bah rm "$container" >/dev/null
bah rmi --prune >/dev/null 2>&1 || true  # the previous build's image, now untagged
echo "export: $(seconds "$t")"
du -sh --apparent-size "$out/rootfs" | sed 's/\t.*/ uncompressed/'
