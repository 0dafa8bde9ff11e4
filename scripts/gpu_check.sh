#!/usr/bin/env bash
# GPU readiness in one go, on a machine with an NVIDIA GPU (README "GPU"):
#   scripts/gpu_check.sh                  full: install the GPU extra, GPU tests, the models on
#                                         CUDA, `make bench` on configs/gpu.yaml -> one JSON
#   scripts/gpu_check.sh --models-only DIR   offline: install the onnxruntime-gpu wheel(s) in DIR
#                                         into a scratch folder and check the models alone (for a
#                                         GPU host without the project's other dependencies)
# Writes results/gpu/gpu_check.json (faces/s and images/s of the models, verify/s at P95 < 300 ms
# of the graph); exits non-zero when the models do not run on CUDA or disagree with the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/gpu
mkdir -p "$out"
started=$(date +%s)
images=()
for name in t1.jpg players.jpg gdp.jpg; do
  for dir in "${SAMPLE_IMAGES:-}" .gpu/images; do
    [ -n "$dir" ] && [ -f "$dir/$name" ] && images+=("$dir/$name") && break
  done
done

if [ "${1:-}" = "--models-only" ]; then
  wheels=${2:?--models-only needs the folder of onnxruntime-gpu wheels}
  python=${PYTHON:-python3}
  site=$(mktemp -d)
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  [ ${#images[@]} -gt 0 ] || { echo "no sample images: set SAMPLE_IMAGES" >&2; exit 2; }
  "$python" -m loadtests.gpu_bench --images "${images[@]}" --out "$out/gpu_check.json"
  echo "models-only GPU check done in $(( $(date +%s) - started )) s"
  exit 0
fi

make install-gpu
bin=.venv/bin
if [ ${#images[@]} -eq 0 ]; then
  dir=$($bin/python -c "from serve_app.samples import insightface_images_dir as d; print(d())")
  images=("$dir/t1.jpg")
fi
$bin/python -m pytest -q tests/test_gpu.py
$bin/python -m loadtests.gpu_bench --images "${images[@]}" --out "$out/models.json"
$bin/python -m loadtests.bench --config configs/gpu.yaml --only graph --concurrency 8,32,64,128 \
  --step-seconds 10 --out "$out/bench"
$bin/python - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
report = {"models": json.loads((out / "models.json").read_text())}
summaries = sorted((out / "bench").glob("*.json"))
if summaries:
    report["bench"] = json.loads(summaries[-1].read_text())
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report, indent=2)[:4000])
PY
echo "GPU check done in $(( $(date +%s) - started )) s"
