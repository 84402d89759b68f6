#!/usr/bin/env bash
# The testbed: a Docker engine, Azurite, an OCI registry and a local base image (also pushed into the registry,
# pinned as MODELSHIP_TESTBED_BASE_REF, for `build --builder registry`), on 127.0.0.1 only;
# plus podman and skopeo, the registry clients that judge `modelship assemble`'s images (tests/test_oci_*).
#   scripts/testbed.sh up|down|status
# Idempotent: reuses what already runs, installs (apt/npm) only what is missing, and `down` stops only
# the processes `up` started (by PID). Endpoints go to $STATE/env, read by tests, the demo and benchmarks.
# On a fresh machine `up` installs every missing Debian package in one apt run, then brings the services up
# side by side (npm's Azurite, debootstrap's base image, dockerd and the registry do not wait for each other)
# and says what each took.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${MODELSHIP_TESTBED_DIR:-$ROOT/.testbed}
TOOLS=${MODELSHIP_TESTBED_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelship/testbed}
LOCAL_BASE=modelship/python:3.11-bookworm  # built here with debootstrap; any other name is pulled
BASE_IMAGE=${MODELSHIP_BASE_IMAGE:-$LOCAL_BASE}
AZURITE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

log() { printf 'testbed: %s\n' "$*" >&2; }
die() { printf 'testbed: error: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... (the description is for the reader of the call)
  local deadline=$((SECONDS + $1)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

apt_install() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    die "$* missing and cannot be installed here (needs root on Debian/Ubuntu); install it and re-run"
  fi
  if [ ! -f "$TOOLS/.apt-updated" ]; then
    apt-get update -qq >&2 && mkdir -p "$TOOLS" && touch "$TOOLS/.apt-updated"
  fi
  log "installing $* (apt)"
  # one apt at a time: wait for another's lock rather than fail at once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 "$@" >&2
}

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

missing_packages() {  # the Debian packages `up` needs and this machine lacks, for one apt run
  local want=()
  if ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; then want+=(docker.io); fi
  if [ ! -x "$TOOLS/npm/node_modules/.bin/azurite-blob" ] && ! command -v npm >/dev/null; then want+=(npm); fi
  command -v docker-registry >/dev/null || want+=(docker-registry)
  command -v podman >/dev/null || want+=(podman)
  command -v skopeo >/dev/null || want+=(skopeo)
  # debootstrap only for the local base image, when it may be missing (no engine yet to ask: it is small)
  if [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && ! command -v debootstrap >/dev/null \
    && ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    want+=(debootstrap)
  fi
  echo "${want[@]}"
}

docker_up() {
  if docker info >/dev/null 2>&1; then log "docker: engine reachable"; return; fi
  command -v dockerd >/dev/null || apt_install docker.io
  if ! pgrep -x dockerd >/dev/null; then
    rm -f /var/run/docker.pid  # left behind by a killed daemon; dockerd refuses to start with it
    log "docker: starting dockerd"
    setsid dockerd >"$STATE/dockerd.log" 2>&1 < /dev/null &
    echo $! >"$STATE/dockerd.pid"
  fi
  wait_for 60 docker docker info || die "docker engine did not answer within 60 s; see $STATE/dockerd.log"
  log "docker: engine up"
}

azurite_up() {
  if alive "$STATE/azurite.pid"; then log "azurite: running on $(cat "$STATE/azurite.port")"; return; fi
  local bin="$TOOLS/npm/node_modules/.bin/azurite-blob"
  if [ ! -x "$bin" ]; then
    command -v npm >/dev/null || apt_install npm
    log "azurite: installing from npm"
    mkdir -p "$TOOLS/npm"
    npm install --silent --prefix "$TOOLS/npm" azurite@3 >&2
  fi
  local port=${MODELSHIP_AZURITE_PORT:-10000}
  port_free "$port" || port=$(free_port)
  mkdir -p "$STATE/azurite"
  setsid "$bin" --blobHost 127.0.0.1 --blobPort "$port" --location "$STATE/azurite" \
    --skipApiVersionCheck --loose --disableTelemetry >"$STATE/azurite.log" 2>&1 < /dev/null &
  echo $! >"$STATE/azurite.pid"; echo "$port" >"$STATE/azurite.port"
  wait_for 30 azurite bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" || die "azurite did not listen on $port; see $STATE/azurite.log"
  log "azurite: up on 127.0.0.1:$port"
}

registry_up() {
  if alive "$STATE/registry.pid"; then log "registry: running on $(cat "$STATE/registry.port")"; return; fi
  command -v docker-registry >/dev/null || apt_install docker-registry
  local port=${MODELSHIP_REGISTRY_PORT:-5000}
  port_free "$port" || port=$(free_port)
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$port}
YML
  setsid docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 < /dev/null &
  echo $! >"$STATE/registry.pid"; echo "$port" >"$STATE/registry.port"
  wait_for 30 registry curl -fsS "http://127.0.0.1:$port/v2/" || die "registry did not answer on $port; see $STATE/registry.log"
  log "registry: up on 127.0.0.1:$port"
}

oci_tools_up() {  # podman pulls and mounts assembled images, skopeo inspects and copies them
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v skopeo >/dev/null || missing+=(skopeo)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  log "oci tools: podman and skopeo present"
}

base_image_up() {  # the rootfs is made while dockerd starts; only the import waits for the engine
  if [ "$BASE_IMAGE" != "$LOCAL_BASE" ]; then
    wait_for 60 docker docker info || die "docker engine did not answer within 60 s; see $STATE/dockerd.log"
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "base image: $BASE_IMAGE present"; return; fi
    log "base image: pulling $BASE_IMAGE"
    docker pull "$BASE_IMAGE" >&2 || die "base image $BASE_IMAGE is not local and cannot be pulled; unset MODELSHIP_BASE_IMAGE to build the local one"
    return
  fi
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "base image: $BASE_IMAGE present"; return; fi
  command -v debootstrap >/dev/null || apt_install debootstrap
  local rootfs; rootfs=$(mktemp -d "${TMPDIR:-/tmp}/modelship-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' RETURN
  log "base image: building $BASE_IMAGE with debootstrap (about 40 s, once per machine)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "${MODELSHIP_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$STATE/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $STATE/debootstrap.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  wait_for 60 docker docker info || die "docker engine did not answer within 60 s; see $STATE/dockerd.log"
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then  # the engine was only starting: it had it
    log "base image: $BASE_IMAGE present"; return
  fi
  tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
  log "base image: $BASE_IMAGE built"
}

base_ref_up() {  # the base image in the registry too, pinned: `build --builder registry` reads it from there
  local reg repo digest
  reg=$(cat "$STATE/registry.port"); repo="127.0.0.1:$reg/modelship/base"
  docker tag "$BASE_IMAGE" "$repo:testbed" || die "cannot tag $BASE_IMAGE as $repo:testbed"
  docker push -q "$repo:testbed" >/dev/null || die "cannot push $BASE_IMAGE to the testbed registry ($repo)"
  digest=$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$repo:testbed" \
    | grep -m1 "^$repo@" | cut -d@ -f2)
  [ -n "$digest" ] || die "pushed $repo:testbed but the engine names no digest for it"
  echo "$repo@$digest" >"$STATE/base.ref"
  log "base image in the registry: $repo@$digest"
}

side_by_side() {  # side_by_side STEP...: run the STEP_up functions at once, each saying what it took; fail naming
  local step pids=() names=() failed=() i  # the ones that did not come up
  for step in "$@"; do
    ( start=$(now); "${step}_up"; log "$step: ready in $(took "$start")" ) &
    pids+=($!); names+=("$step")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
  done
  [ ${#failed[@]} -eq 0 ] || die "not up: ${failed[*]} (see the lines above)"
}

up() {
  mkdir -p "$STATE" "$TOOLS"
  local start step_start packages
  start=$(now)
  packages=$(missing_packages)
  if [ -n "$packages" ]; then
    step_start=$(now)
    # shellcheck disable=SC2086 # one word per package
    apt_install $packages
    log "apt: $packages installed in $(took "$step_start")"
  fi
  side_by_side docker azurite registry oci_tools base_image
  base_ref_up
  write_env
  log "up in $(took "$start")"
}

write_env() {
  local az reg
  az=$(cat "$STATE/azurite.port"); reg=$(cat "$STATE/registry.port")
  # Values are single-quoted so that `set -a; . FILE` works in shells and Makefiles alike. Written beside and
  # renamed: tests running meanwhile read the old file or the new one, never half of one.
  cat >"$STATE/env.$$.tmp" <<ENV
# written by scripts/testbed.sh up; the endpoints of the local testbed (the Azurite key is public)
MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING='DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$az/devstoreaccount1;'
MODELSHIP_TESTBED_AZURITE_PORT='$az'
MODELSHIP_TESTBED_REGISTRY='127.0.0.1:$reg'
MODELSHIP_BASE_IMAGE='$BASE_IMAGE'
MODELSHIP_TESTBED_BASE_REF='$(cat "$STATE/base.ref")'
TESTCONTAINERS_RYUK_DISABLED='true'
TESTCONTAINERS_HOST_OVERRIDE='127.0.0.1'
ENV
  mv -f "$STATE/env.$$.tmp" "$STATE/env"
  log "endpoints written to $STATE/env"
}

stop_pid() {
  local name=$1 file="$STATE/$1.pid"
  if alive "$file"; then
    local pid; pid=$(cat "$file")
    kill -- "-$pid" 2>/dev/null || kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    log "$name: stopped"
  fi
  rm -f "$file"
}

case "${1:-}" in
  up) up ;;
  down)
    for s in registry azurite dockerd; do stop_pid "$s"; done
    rm -f "$STATE/env" ;;
  status)
    rc=0
    if docker info >/dev/null 2>&1; then echo "docker: up"; else echo "docker: down"; rc=1; fi
    for s in azurite registry; do
      if alive "$STATE/$s.pid"; then echo "$s: up on 127.0.0.1:$(cat "$STATE/$s.port")"; else echo "$s: down"; rc=1; fi
    done
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then echo "base image: $BASE_IMAGE"; else
      echo "base image: missing"; rc=1
    fi
    if command -v podman >/dev/null && command -v skopeo >/dev/null; then echo "oci tools: podman, skopeo"; else
      echo "oci tools: missing"; rc=1
    fi
    exit $rc ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
