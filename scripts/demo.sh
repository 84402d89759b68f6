#!/usr/bin/env bash
# The whole story on the local testbed (`make demo` runs this after `scripts/testbed.sh up`):
#   data scientist: train + publish v1 to Azurite
#   pipeline:       lock + fetch latest → build → smoke test (pytest plugin) → push → render k8s pinned by digest
#   data scientist: publish v2;  pipeline again: the new image carries v2, only model + code layers rebuilt.
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
printf '[pytest]\njunit_logging = system-out\n' >"$OUT/pytest.ini"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pipeline() {  # pipeline TAG: what azure-pipelines.yml does on every commit
  local tag=$1
  step "[$tag] lock + fetch the latest model"
  modelship lock "$STORE" -o "$OUT/modelship.lock"
  modelship fetch --lock "$OUT/modelship.lock" "$OUT/model" --no-progress
  step "[$tag] build app + model into one image"
  modelship build "$APP" --model "$OUT/model" --tag "$IMAGE:$tag" --base-image "$MODELSHIP_BASE_IMAGE" \
    --tag-model-version --quiet --json >"$OUT/build-$tag.json"
  python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); print("built", *b["tags"], b["id"][:19])' "$OUT/build-$tag.json"
  step "[$tag] smoke-test the image with the pytest plugin"
  (cd "$OUT" && pytest -c "$OUT/pytest.ini" -p no:cacheprovider -q --rootdir "$OUT" \
    --modelship-image "$IMAGE:$tag" --modelship-cases "$APP/modelship-cases.yaml" --junitxml "$OUT/smoke-$tag.xml") \
    | tee "$OUT/smoke-$tag.log"
  step "[$tag] push to the registry"
  modelship push "$IMAGE:$tag" --quiet --json >"$OUT/push-$tag.json"
  python3 -c 'import json,sys; print("pushed", json.load(open(sys.argv[1]))["image_digest"])' "$OUT/push-$tag.json"
}

digest_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_digest"])' "$OUT/push-$1.json"; }
layers_of() { docker image inspect --format '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1"; }

step "data scientist: train the Iris model and publish it as 1.0.0"
python3 "$APP/train.py" --out "$OUT/train-v1" --publish "$STORE" --version 1.0.0
modelship resolve "$STORE"

pipeline v1

step "render Kubernetes manifests pinned by digest"
modelship deploy render --image "$IMAGE@$(digest_of v1)" --out "$OUT/k8s"

step "data scientist: retrain (C=0.5) and publish 1.1.0"
python3 "$APP/train.py" --out "$OUT/train-v2" --c 0.5 --publish "$STORE" --version 1.1.0

pipeline v2

step "what changed between the two images"
mapfile -t L1 < <(layers_of "$IMAGE:v1")
mapfile -t L2 < <(layers_of "$IMAGE:v2")
shared=0
for i in "${!L2[@]}"; do [ "${L1[$i]:-}" = "${L2[$i]}" ] && shared=$((shared + 1)) || break; done
rebuilt=$(( ${#L2[@]} - shared ))
v1_model=$(modelship inspect "$IMAGE@$(digest_of v1)" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["version"])')
v2_model=$(modelship inspect "$IMAGE@$(digest_of v2)" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["model"]["version"])')
[ "$v2_model" = 1.1.0 ] || { echo "demo: expected the v2 image to carry model 1.1.0, got $v2_model" >&2; exit 1; }
# The generated Dockerfile puts the model, then the app code, last: a new model rebuilds exactly those.
[ "$rebuilt" -le 3 ] || { echo "demo: expected only the model and code layers to change, $rebuilt layers did" >&2; exit 1; }

cat <<SUMMARY

== summary
model store        $STORE
v1 image           $IMAGE@$(digest_of v1)   (model $v1_model)
v2 image           $IMAGE@$(digest_of v2)   (model $v2_model)
layers             ${#L2[@]} in v2; $shared shared with v1 (base, user, dependencies); $rebuilt rebuilt (the model layer and the app code above it)
smoke tests        $(tail -n 1 "$OUT/smoke-v1.log") / $(tail -n 1 "$OUT/smoke-v2.log")
k8s manifests      $OUT/k8s (image pinned by digest)
SUMMARY
