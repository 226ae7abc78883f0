#!/usr/bin/env bash
# Stand-in base images for machines that reach no image registry (CI here): one
# Debian rootfs made by debootstrap from Debian's own python3 and redis-server,
# imported into podman under the exact names the Dockerfile and docker-compose.yml
# use, so those files build and run unchanged. Skips what already exists.
#   usage: standin-images.sh PYTHON_IMAGE REDIS_IMAGE
set -euo pipefail
python_image=$1 redis_image=$2
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$python_image" && podman image exists "$redis_image"; then
  echo "standin: $python_image and $redis_image exist"
  exit 0
fi
root=$(mktemp -d /var/tmp/standin.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "standin: debootstrap bookworm into $root"
debootstrap --variant=minbase --include=python3,python3-venv,redis-server,redis-tools,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
# As in the official images: `python` on PATH (python:*-slim), /data owned by the redis user
# that Debian's redis-server package made (redis:*).
ln -sf python3 "$root/usr/bin/python"
mkdir -p "$root/data"
chroot "$root" chown redis:redis /data
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc "$root"/usr/share/man
tar -C "$root" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' - "$python_image"
podman tag "$python_image" "$redis_image"
echo "standin: tagged $python_image and $redis_image"
