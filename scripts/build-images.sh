#!/usr/bin/env bash
# Build the platform's three images (serving, training, tracking) from their Dockerfiles, as CI does, with no
# image registry: the base image is made here with debootstrap and the Python packages come from a wheelhouse
# fetched once on this machine. The tests in tests/containers run the rendered container specs in them.
#
#   export DOCKER_HOST="$(scripts/docker-engine.sh)"
#   scripts/build-images.sh            # -> mlplat-serving:local, mlplat-training:local, mlplat-tracking:local
#
# Cached under $MLPLAT_CACHE (default ~/.cache/mlplat/images), so a second run rebuilds only what changed:
#   - the base image, mlplat-base:bookworm-<ISO week>-<params hash> (Debian minbase + python3, python3-venv;
#     ~40 s), rebuilt weekly for security updates;
#   - the wheelhouse, keyed by the requirements (pyproject.toml's dependencies and the serving/training extras,
#     tracking/requirements.txt, torch's pin): every wheel the three images install, torch's CPU wheel from
#     $PIP_FIND_LINKS included, served to the builds on 127.0.0.1 (PIP_NO_INDEX + PIP_FIND_LINKS build args);
#   - the engine's layers: serving and training share everything up to their project install.
# Environment: MLPLAT_IMAGE_TAG (default local), TORCH_VERSION (2.13.0), DEBIAN_MIRROR, PYTHON (a 3.11 with pip,
# the base image's Python version, which fetches the wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

export DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/mlplat-docker.sock}"
export DOCKER_BUILDKIT=0  # Debian's engine 20.10 has no buildx; BuildKit would also pull its frontend image
TAG="${MLPLAT_IMAGE_TAG:-local}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
CACHE="${MLPLAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlplat/images}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PYTHON="${PYTHON:-python3}"
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
IMAGES=(serving training tracking)  # serving before training: training reuses its torch layer

say() { echo "build-images: $*" >&2; }
now() { date +%s; }
mkdir -p "$CACHE/logs"
started=$(now)

# 1. The base image: Debian's python3 (3.11 on bookworm) as python:3.11-slim-bookworm would give.
params_hash=$(printf '%s\n' "$SUITE" minbase "$BASE_PACKAGES" "$MIRROR" | sha256sum | cut -c1-8)
BASE="mlplat-base:$SUITE-$(date -u +%GW%V)-$params_hash"
if docker image inspect "$BASE" >/dev/null 2>&1; then
  say "base image $BASE (cached)"
else
  command -v debootstrap >/dev/null || { say "debootstrap not found: apt-get install -y debootstrap"; exit 1; }
  t0=$(now)
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  say "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $MIRROR"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
      >"$CACHE/logs/debootstrap.log" 2>&1; then
    tail -n 30 "$CACHE/logs/debootstrap.log" >&2
    exit 1
  fi
  # This machine's CA bundle (it may carry a TLS-intercepting proxy's CA) for anything in a build that
  # goes online, e.g. pip with PIP_CERT=/etc/ssl/certs/ca-certificates.crt.
  if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
    cp "$PIP_CERT" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  fi
  # What an image needs no copy of: downloaded .debs, apt lists, docs, man pages.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" -c . | docker import --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
  say "base image $BASE built in $(( $(now) - t0 )) s"
fi
docker tag "$BASE" "mlplat-base:$SUITE"

# 2. The wheelhouse: one resolution for the three images, fetched by a Python of the base image's version.
base_python=$(docker run --rm --network none "$BASE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$base_python" != "$host_python" ]; then
  say "$PYTHON is Python $host_python but the base image has $base_python: set PYTHON to a $base_python"
  exit 1
fi
requirements="$CACHE/requirements.txt"
"$PYTHON" - "$TORCH_VERSION" >"$requirements" <<'EOF'
"""Everything the Dockerfiles pip-install, as one requirements file (the project itself is built in the image)."""
import sys
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))
lines = [f"torch=={sys.argv[1]}"]
lines += project["build-system"]["requires"]  # the in-image project build runs isolated, from the wheelhouse
lines += project["project"]["dependencies"]
for extra in ("serving", "training"):
    lines += project["project"]["optional-dependencies"][extra]
for line in open("tracking/requirements.txt"):
    line = line.split("#", 1)[0].strip()
    if line:
        lines.append(line)
print("\n".join(lines))
EOF
wheel_key=$( (cat "$requirements"; echo "python $host_python") | sha256sum | cut -c1-16)
WHEELHOUSE="$CACHE/wheelhouse/$wheel_key"
if [ -d "$WHEELHOUSE" ]; then
  say "wheelhouse $WHEELHOUSE (cached, $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels)"
else
  t0=$(now)
  say "fetching the wheelhouse ($(wc -l <"$requirements") requirements; torch $TORCH_VERSION from ${PIP_FIND_LINKS:-the indexes})"
  rm -rf "$WHEELHOUSE.partial"
  # Wheels only: sdists are built here once, so the image builds never compile anything.
  if ! "$PYTHON" -m pip wheel --quiet --wheel-dir "$WHEELHOUSE.partial" -r "$requirements" \
      >"$CACHE/logs/wheelhouse.log" 2>&1; then
    tail -n 30 "$CACHE/logs/wheelhouse.log" >&2
    exit 1
  fi
  for wheel in "$WHEELHOUSE.partial"/torch-*.whl; do
    case "$wheel" in
      *+cpu-*) ;;
      *) say "the wheelhouse's torch is not the CPU build: put torch-$TORCH_VERSION+cpu in \$PIP_FIND_LINKS"; exit 1 ;;
    esac
  done
  mv "$WHEELHOUSE.partial" "$WHEELHOUSE"
  say "wheelhouse fetched in $(( $(now) - t0 )) s ($(du -sh "$WHEELHOUSE" | cut -f1))"
fi
# Older wheelhouses: keep the newest three.
find "$CACHE/wheelhouse" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 \
  | cut -d' ' -f2- | xargs -r rm -rf

# Served on loopback at a port fixed for this cache folder: the URL is a build arg, so part of every pip layer's
# cache key, and a stable one lets a new wheelhouse (a changed pyproject.toml) reuse the torch layer. Layers that
# install from the wheelhouse also copy the file that says what they install, so they rebuild when it changes.
port=$((20000 + 16#$(printf '%s' "$CACHE" | sha256sum | cut -c1-4) % 20000))
if ! "$PYTHON" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
  port=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
fi
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$port" >"$CACHE/logs/wheelhouse-http.log" 2>&1 &
http_pid=$!
trap 'kill "$http_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" \
    "http://127.0.0.1:$port/" 2>/dev/null && break
  sleep 0.1
done

# 3. The images. The build context is what <Dockerfile>.dockerignore lets through (BuildKit reads that file;
# the classic builder does not, so the context is assembled here from the same rules).
context_paths() {
  local ignore="$1" line paths=() excludes=()
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      ''|'#'*|'*') ;;
      '!'*) line="${line#!}"; paths+=("${line%/}") ;;
      '**/'*) excludes+=("--exclude=${line#\*\*/}") ;;
      *) say "$ignore: unsupported rule '$line' (expected '*', '!path' or '**/name')"; return 1 ;;
    esac
  done <"$ignore"
  printf '%s\n' "${excludes[@]}" "${paths[@]}"
}

# The classic builder keeps each build stage's last image, untagged: the next build's layer cache. Those the given
# build logs ended a step with are this run's; any other (label mlplat.stage=build, set in each build stage) an
# earlier run left, ~0.9 GB each, and nothing needs it.
prune_stale_stages() {
  local used
  used=$(sed -n 's/^ ---> \([0-9a-f]\{12\}\)$/\1/p' "$@" | LC_ALL=C sort -u)
  docker images --quiet --filter dangling=true --filter label=mlplat.stage=build | LC_ALL=C sort -u \
    | comm -23 - <(printf '%s\n' "$used") | xargs -r docker rmi >/dev/null
}

git_commit=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
report=()
for image in "${IMAGES[@]}"; do
  t0=$(now)
  dockerfile="$image/Dockerfile"
  mapfile -t context < <(context_paths "$dockerfile.dockerignore")
  # The engine needs the Dockerfile in the context; add it once (a second copy becomes a broken hard link).
  covered=false
  for path in "${context[@]}"; do [[ "$dockerfile" == "$path" || "$dockerfile" == "$path"/* ]] && covered=true; done
  [ "$covered" = true ] || context+=("$dockerfile")
  args=(--network host --force-rm -f "$dockerfile" -t "mlplat-$image:$TAG"
        --build-arg "BASE_IMAGE=$BASE" --build-arg PIP_NO_INDEX=1
        --build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/"
        --label "org.opencontainers.image.revision=$git_commit" --label "mlplat.build=scripts/build-images.sh")
  [ "$image" = training ] && args+=(--build-arg "GIT_COMMIT=$git_commit")
  [ "$image" != tracking ] && args+=(--build-arg "TORCH_VERSION=$TORCH_VERSION")
  say "building mlplat-$image:$TAG (log: $CACHE/logs/build-$image.log)"
  if ! tar -C "$REPO" -c "${context[@]}" | docker build "${args[@]}" - \
      >"$CACHE/logs/build-$image.log" 2>&1; then
    tail -n 40 "$CACHE/logs/build-$image.log" >&2
    exit 1
  fi
  size=$(docker image inspect -f '{{.Size}}' "mlplat-$image:$TAG")
  report+=("$(printf 'mlplat-%-9s %6d MB  built in %4d s' "$image:$TAG" $((size / 1000000)) $(( $(now) - t0 )))")
done

# What earlier runs left: their images' previous builds (untagged now), their build stages, older base images.
docker image prune --force --filter "label=mlplat.build=scripts/build-images.sh" >/dev/null
logs=()
for image in "${IMAGES[@]}"; do logs+=("$CACHE/logs/build-$image.log"); done
prune_stale_stages "${logs[@]}" || say "an earlier build stage could not be removed (docker rmi failed); the images are built"
docker images --format '{{.Repository}}:{{.Tag}}' mlplat-base | grep -E "^mlplat-base:$SUITE-[0-9]{4}W[0-9]{2}-" \
  | grep -vxF "$BASE" | xargs -r docker rmi >/dev/null 2>&1 || true

say "done in $(( $(now) - started )) s (base: $BASE)"
printf '%s\n' "${report[@]}" | tee "$CACHE/sizes.txt" >&2
