#!/usr/bin/env bash
# `make bench` on the GPU machine (device tool: H100/H200, 16 cores, JAX, resnet50 at 224, bfloat16),
# then the backbone alone for the distillation students beside their teacher (STUDENTS=0 skips it).
#
# Run from the repository root on the device machine. Its image has JAX (CUDA), h5py, OpenCV,
# pandas, scikit-learn, tqdm and matplotlib; the rest (keras, namex, optree, ai-edge-litert 2.3.0,
# protobuf 4.25.9, fer: 26 MB) is carried as cp312 wheels in .whl/ (`make gpu-wheels` here), beside
# mediapipe 0.10.21's two BlazeFace models (.whl/mediapipe/modules/face_detection/), with
# the test media in tests/media/ (`make media`); both are git-ignored, hence carried:
#   run(command="bash bench/gpu_run.sh", carry=[".whl", "tests/media"])
# Extra arguments go to `python -m bench` (e.g. --stages stage_one,backbone to split the run).
# The JSON, the log and nvidia-smi's view come back under $OUT; copy
# $OUT/docs/bench/<machine>.json to docs/bench/ and its figures to docs/benchmarks.md.
set -euo pipefail

: "${OUT:?bench/gpu_run.sh: set OUT to the folder whose files come back (the device tool sets it)}"
PYTHON=${PYTHON:-python3}
MACHINE=${MACHINE:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')-$(nproc)core}
CLIP=tests/media/WolfgangLanger_Pexels.mp4

if ! compgen -G ".whl/*.whl" > /dev/null; then
  echo "bench/gpu_run.sh: no wheels in .whl/; run \`make gpu-wheels\` here and carry .whl" >&2
  exit 2
fi
if [ ! -f "$CLIP" ]; then
  echo "bench/gpu_run.sh: $CLIP is missing; run \`make media\` here and carry tests/media" >&2
  exit 2
fi

"$PYTHON" -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
# .whl holds mediapipe/modules/face_detection/*.tflite, where extract.blazeface looks for them.
export PYTHONPATH="/tmp/site:$PWD:$PWD/.whl"
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the bench process and the extraction process share the GPU
export TF_CPP_MIN_LOG_LEVEL=2

mkdir -p "$OUT/docs/bench"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
"$PYTHON" -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$OUT/bench.log"

# Stage two at the size (2-layer GRU(256), T=64, D=2048) with enough windows per epoch
# (16 x 8192 frames: 2048 windows, 32 steps) for the epoch time to mean something on an H100.
"$PYTHON" -m bench --machine "$MACHINE" --backbone resnet50 --precision bfloat16 --batch 256 \
  --workers "$(nproc)" --clip "$CLIP" --train-dim 2048 --train-units 256 --train-layers 2 --train-seq-len 64 \
  --train-videos 16 --train-frames 8192 --train-epochs 4 --out "$OUT/docs/bench/$MACHINE.json" "$@" \
  2>&1 | tee -a "$OUT/bench.log"

# Students of `make distill` beside their teachers, as stage one runs them (uint8 in, embedding out).
if [ "${STUDENTS:-1}" = 1 ]; then
  for spec in fer: mobilenetv2:64,64,3 mobilenetv2:96,96,3 efficientnetb0:96,96,3; do
    name=${spec%%:*}; size=${spec#*:}
    "$PYTHON" -m bench --machine "$MACHINE" --stages backbone --backbone "$name" ${size:+--input-size "$size"} \
      --precision bfloat16 --batch 256 --clip "$CLIP" \
      --out "$OUT/docs/bench/$MACHINE-backbone-$name${size:+-${size//,/x}}.json" 2>&1 | tee -a "$OUT/bench.log"
  done
fi
