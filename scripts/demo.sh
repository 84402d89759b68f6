#!/usr/bin/env bash
# The whole story on the local testbed (`make demo` runs this after `scripts/testbed.sh up`):
#   data scientist: train + publish v1 to Azurite
#   pipeline (a commit): lock + fetch latest → build the app-only image (Docker) → push it → assemble the
#                        model onto it in the registry (no Docker) → smoke-test that digest → promote it
#   data scientist: publish v2;  pipeline (the nightly, model-only): fetch + assemble onto the same app
#                   image, printing bytes uploaded and time → smoke-test + gate it against :stable (v1:
#                   201 probes to both, answers compared) → promote
#   pipeline again, nothing new: 0 bytes, same digest;  render k8s manifests pinned by the promoted digest.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APP=$ROOT/examples/flask_app
OUT=${MODELSHIP_DEMO_DIR:-$ROOT/demo-out}
: "${MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING:?testbed env missing: run 'make demo' (or scripts/testbed.sh up and source .testbed/env)}"
: "${MODELSHIP_TESTBED_REGISTRY:?}" "${MODELSHIP_BASE_IMAGE:?}"

# The pipeline's secret variable; modelship never prints it.
export AZURE_STORAGE_CONNECTION_STRING=$MODELSHIP_TESTBED_AZURITE_CONNECTION_STRING
RUN=$(date +%Y%m%d%H%M%S)
STORE="az://devstoreaccount1/demo-$RUN/iris"       # a fresh container: the demo starts from an empty store
IMAGE="$MODELSHIP_TESTBED_REGISTRY/modelship-demo/iris"
rm -rf "$OUT" && mkdir -p "$OUT"
# The smoke run collects only the plugin's items; its own ini keeps the repo's test suite out of it.
printf '[pytest]\n' >"$OUT/pytest.ini"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }
now() { date +%s.%N; }

fetch_latest() {  # what every pipeline run starts with
  step "[$1] lock + fetch the latest model"
  modelship lock "$STORE" -o "$OUT/modelship.lock"
  modelship fetch --lock "$OUT/modelship.lock" "$OUT/model" --no-progress
}

assemble_model() {  # assemble_model RUN TAG: the model onto the app image, in the registry; no Docker engine
  local run=$1 tag=$2 t0
  step "[$run] assemble the model onto the app image (registry only, DOCKER_HOST pointing nowhere)"
  t0=$(now)
  DOCKER_HOST=tcp://127.0.0.1:1 modelship assemble "$IMAGE@$APP_DIGEST" --model "$OUT/model" --tag "$IMAGE:$tag" \
    --json >"$OUT/assemble-$run.json"
  python3 - "$OUT/assemble-$run.json" "$t0" "$(now)" <<'PY' | tee "$OUT/assemble-$run.txt"
import json, sys
a, seconds = json.load(open(sys.argv[1])), float(sys.argv[3]) - float(sys.argv[2])
ref = a["ref"]  # REGISTRY/REPO@sha256:…, as every verb that writes an image prints it
if a["unchanged"]:
    print(f"{ref}: 0 bytes, same digest ({seconds:.1f} s)")
else:
    print(f"{ref}: {a['uploaded_bytes']} bytes uploaded in {seconds:.1f} s (model {a['model']['version']})")
PY
}

smoke_and_promote() {  # smoke_and_promote RUN: test the exact digest that will run, gate it, then tag it
  local run=$1 digest baseline gate=()
  digest=$(field "$OUT/assemble-$run.json" image_digest)
  # the gate: what production runs (:stable), pinned by digest; the first release has none yet
  baseline=$(modelship inspect "$IMAGE:stable" --missing-ok --print ref 2>/dev/null)
  if [ -n "$baseline" ]; then
    # the latency bound at 3x, not the cases file's 1.5x: here both containers share the machine with
    # whatever else it runs (the test suite, in CI); a release agent runs the gate alone
    gate=(--modelship-baseline "$baseline" --modelship-max-latency-ratio 3)
    step "[$run] smoke-test $IMAGE@${digest:0:19}… and gate it against :stable (${baseline##*@}) with the pytest plugin"
  else
    step "[$run] smoke-test $IMAGE@${digest:0:19}… with the pytest plugin (no :stable yet: the gate is skipped)"
  fi
  (cd "$OUT" && pytest -c "$OUT/pytest.ini" -p no:cacheprovider -q --rootdir "$OUT" --modelship-pull \
    --modelship-image "$IMAGE@$digest" --modelship-cases "$APP/modelship-cases.yaml" --junitxml "$OUT/smoke-$run.xml" \
    "${gate[@]}") | tee "$OUT/smoke-$run.log"
  step "[$run] promote the tested digest"
  modelship promote "$IMAGE@$digest" --tag stable
}

step "data scientist: train the Iris model and publish it as 1.0.0"
python3 "$APP/train.py" --out "$OUT/train-v1" --publish "$STORE" --version 1.0.0
modelship resolve "$STORE"

fetch_latest v1
step "[v1] build the app-only image (the Docker engine builds the app, not the model)"
modelship build "$APP" --tag "$IMAGE:app" --base-image "$MODELSHIP_BASE_IMAGE" --quiet
step "[v1] push the app image"
modelship push "$IMAGE:app" --quiet --json >"$OUT/push-app.json"
APP_DIGEST=$(field "$OUT/push-app.json" image_digest)
echo "app image $IMAGE@$APP_DIGEST"
assemble_model v1 v1
smoke_and_promote v1

step "data scientist: retrain (C=0.5) and publish 1.1.0"
python3 "$APP/train.py" --out "$OUT/train-v2" --c 0.5 --publish "$STORE" --version 1.1.0

# the nightly run: the app did not change, so no build and no push; only the model layers go up
fetch_latest v2
assemble_model v2 v2
smoke_and_promote v2

step "[again] the nightly run with nothing new"
fetch_latest again
assemble_model again v2
grep -q "0 bytes, same digest" "$OUT/assemble-again.txt" || { echo "demo: a run with nothing new uploaded something" >&2; exit 1; }
[ "$(field "$OUT/assemble-again.json" image_digest)" = "$(field "$OUT/assemble-v2.json" image_digest)" ] \
  || { echo "demo: a run with nothing new gave another digest" >&2; exit 1; }

D1=$(field "$OUT/assemble-v1.json" image_digest)
D2=$(field "$OUT/assemble-v2.json" image_digest)
version_of() { modelship inspect "$IMAGE@$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["version"])'; }
v1_model=$(version_of "$D1")
v2_model=$(version_of "$D2")
[ "$v2_model" = 1.1.0 ] || { echo "demo: expected the v2 image to carry model 1.1.0, got $v2_model" >&2; exit 1; }

step "render Kubernetes manifests pinned by the promoted digest"
modelship deploy render --image "$IMAGE@$D2" --out "$OUT/k8s"

cat <<SUMMARY

== summary
model store        $STORE
app image          $IMAGE@$APP_DIGEST   (built once, by the Docker engine)
v1 image           $IMAGE@$D1   (model $v1_model)
v2 image           $IMAGE@$D2   (model $v2_model)
model-only update  $(cut -d' ' -f2- "$OUT/assemble-v2.txt")
no-change run      $(cut -d' ' -f2- "$OUT/assemble-again.txt")
smoke tests        $(tail -n 1 "$OUT/smoke-v1.log") / $(tail -n 1 "$OUT/smoke-v2.log")
gate (v2 vs v1)    $(grep -o 'compare vs baseline .*' "$OUT/smoke-v2.log" | sed 's/^compare vs baseline [^ ]* //')
promoted           $IMAGE:stable -> $D2
k8s manifests      $OUT/k8s (image pinned by digest)
SUMMARY
