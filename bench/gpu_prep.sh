#!/usr/bin/env bash
# Prepare, on a machine with network and the repo's venv, everything bench/gpu.sh needs on the
# GPU machine (which reaches nothing): one payload (the onnxruntime-gpu wheel, the few Python
# wheels its image lacks, the verified model bundle, the benchmark videos), cut into parts that
# each fit one device call (64 MiB per call, working tree included), under .ort/ (git-ignored).
#
#   bench/gpu_prep.sh            # then: one `run` per part, carry [".ort/c_NN"], command bench/gpu.sh
#
# Env: PYTHON (default .venv/bin/python), PART_MB (default 56), CONFIG (default config.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PART_MB=${PART_MB:-56}
CONFIG=${CONFIG:-config.yaml}
B=.ort/build
P=$B/payload
ORT_WHEEL=onnxruntime-gpu==1.31.1
# The device image (Python 3.12; see /work/.library/device/KINDS.md) has numpy, opencv, pyyaml,
# tokenizers, matplotlib, psutil; these are what the daemon imports beyond them.
DEPS="pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection typing_extensions pyzmq==27.3.0
soundfile==0.14.0 cffi pycparser"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"

rm -rf .ort/c_* "$P" && mkdir -p "$P/whl" "$P/media" "$P/bundle"
dl() { "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        $PLATFORMS -d "$1" "${@:2}"; }
ls $B/onnxruntime_gpu-1.31.1-*.whl >/dev/null 2>&1 || dl $B "$ORT_WHEEL"
cp $B/onnxruntime_gpu-1.31.1-*.whl "$P/"
dl "$P/whl" $DEPS

# the bundle the config selects, verified here (sha256 + parity), copied without links
version=$("$PY" - "$CONFIG" <<'PYEOF'
import sys
from perceptd.daemon.bundle import resolve_bundle, verify_bundle
from perceptd.daemon.config import load_config
cfg = load_config(sys.argv[1])
b = verify_bundle(resolve_bundle(cfg.bundle.dir, cfg.bundle.version))
print(b.path)
PYEOF
)
cp -rL "$version" "$P/bundle/"
basename "$version" > "$P/bundle/VERSION"

# videos for 8 distinct streams (stream i uses video i % 8) at 30 and 240 fps, and the WAV
"$PY" -c "
from perceptd.bench import media
for i in range(8):
    media.video(i, 30), media.video(i, 240)
media.speech_wav()"
cp bench/.cache/stream*_h264.mp4 bench/.cache/speech_loop.wav "$P/media/"

tar -cf $B/payload.tar -C $B payload
sha=$(sha256sum $B/payload.tar | cut -d' ' -f1)
( cd $B && rm -f part.* && split -b "${PART_MB}M" -d -a 2 payload.tar part. )
n=$(ls $B/part.* | wc -l)
for f in $B/part.*; do
  k=${f##*.}
  mkdir -p ".ort/c_$k" && mv "$f" ".ort/c_$k/"
  printf 'sha256 %s\nparts %s\nbytes %s\n' "$sha" "$n" "$(stat -c %s $B/payload.tar)" > ".ort/c_$k/MANIFEST"
done
rm -f $B/payload.tar
echo "payload sha256 $sha, $n parts of <= ${PART_MB} MiB:"
for d in .ort/c_*; do echo "  run carry=[\"$d\"] command='bench/gpu.sh'"; done
echo "the call that carries the last part installs and can run a phase: bench/gpu.sh all"
