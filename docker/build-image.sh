#!/usr/bin/env bash
# Builds the Flotilla node image without a registry or a base image.
#
#   docker/build-image.sh [BINARY] [TAG]
#
# BINARY: the server binary to package; when omitted (or empty), the release
#         `flotilla` binary is built with cargo and used.
# TAG:    the image tag (default: $FLOTILLA_IMAGE, else flotilla:dev).
#
# The image's root filesystem holds exactly: /flotilla (the binary, debug
# info stripped when `strip` is available), every shared library `ldd` lists
# for it, and the dynamic loader. It is imported with `docker import`, with
# ENTRYPOINT ["/flotilla"] and the label org.flotilla.binary-sha256 set to
# the SHA-256 of BINARY, which the Jepsen harness compares to decide whether
# the image is stale.
set -euo pipefail

binary="${1:-}"
tag="${2:-${FLOTILLA_IMAGE:-flotilla:dev}}"

if [[ -z "$binary" ]]; then
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  (cd "$repo" && cargo build --release -p kvserver --bin flotilla)
  binary="${CARGO_TARGET_DIR:-$repo/target}/release/flotilla"
fi
if [[ ! -x "$binary" ]]; then
  echo "build-image.sh: $binary is not an executable file" >&2
  exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT

if command -v strip >/dev/null 2>&1; then
  strip --strip-debug -o "$rootfs/flotilla" "$binary"
else
  cp "$binary" "$rootfs/flotilla"
fi
chmod 0755 "$rootfs/flotilla"

# `ldd` prints "name => /path (addr)" for libraries and "/path (addr)" for the
# loader; a static binary makes it fail with "not a dynamic executable".
if libraries="$(ldd "$binary" 2>/dev/null)"; then
  while read -r library; do
    mkdir -p "$rootfs$(dirname "$library")"
    cp -L "$library" "$rootfs$library"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libraries")
fi

hash="$(sha256sum "$binary" | cut -d' ' -f1)"
previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
  docker import \
    --change 'ENTRYPOINT ["/flotilla"]' \
    --change "LABEL org.flotilla.binary-sha256=$hash" \
    --message "flotilla from $(basename "$binary")" \
    - "$tag" >/dev/null
# The image the tag named before is now untagged: remove it (unless a
# container still uses it).
if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "built $tag from $binary (sha256 $hash)"
