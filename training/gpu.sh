#!/usr/bin/env bash
# Train all three models on the GPU machine in about 10 minutes and bring the weights back.
#
# Here, once: bash scripts/gpu-wheels.sh   (the packages that machine lacks, into .whl/)
# Then, through the device tool, from the repository root:
#   run(command="bash training/gpu.sh", carry=[".whl"], timeout_s=600)
# and copy what comes back into weights/ (the three weight files and training-log.json);
# put calibration.txt's temperature and threshold into serve_config.yaml; make evaluate.
#
# On the machine: renders the train and validation splits with every core (the data set is
# deterministic: the same images as `make data` here), fine-tunes YOLO, SSD and model_v1
# from the shipped weights (YOLO for a fixed time, ultralytics fitting its schedule to it;
# SSD and model_v1 for fixed epochs, side by side), calibrates model_v1, and writes the
# weights, the training history and the log to $OUT. Times are budgets, not measurements:
# the log says what each step took.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-runs/gpu-out}
YOLO_HOURS=${YOLO_HOURS:-0.06}
SSD_EPOCHS=${SSD_EPOCHS:-6}
CLASSIFIER_EPOCHS=${CLASSIFIER_EPOCHS:-4}
# The sources' mix is the Makefile's (one recipe for both machines).
YOLO_MIX=${YOLO_MIX:-$(sed -n 's/^YOLO_MIX ?= //p' Makefile)}
[ -n "$YOLO_MIX" ] || { echo "no YOLO_MIX in the Makefile" >&2; exit 1; }
YOLO_VAL=${YOLO_VAL:-$(sed -n 's/^YOLO_VAL ?= //p' Makefile)}
YOLO_LR0=${YOLO_LR0:-$(sed -n 's/^YOLO_LR0 ?= //p' Makefile)}
[ -n "$YOLO_LR0" ] || { echo "no YOLO_LR0 in the Makefile" >&2; exit 1; }
SSD_MIX=${SSD_MIX:-$(sed -n 's/^SSD_MIX ?= //p' Makefile)}
SSD_VAL=${SSD_VAL:-$(sed -n 's/^SSD_VAL ?= //p' Makefile)}
# SSD's batch here is 64, twice the Makefile's 32: twice its rate (the linear scaling rule).
SSD_LR=${SSD_LR:-$(awk '/^SSD_LR \?= /{print 2 * $3}' Makefile)}
[ -n "$SSD_LR" ] || { echo "no SSD_LR in the Makefile" >&2; exit 1; }
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu-train.log") 2>&1
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ "${ALLOW_CPU:-0}" = 1 ] || $PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
export PYTHONUNBUFFERED=1 YOLO_OFFLINE=1
CORES=$(nproc)
at_least_1() { echo $(($1 > 0 ? $1 : 1)); }
step() { echo "== $(date -u +%T) +${SECONDS}s: $*"; }

step "rendering train and val with $CORES processes"
$PY -m training.datagen --out data/primitives --splits train val --workers "$CORES" ${DATA_SCALE:+--scale $DATA_SCALE}

step "YOLO for $YOLO_HOURS h"
$PY -m training.train_yolo --data data/primitives/dataset.yaml --model weights/yolo_obb.pt \
  --name yolo_gpu --hours "$YOLO_HOURS" --epochs 100 --close-mosaic 2 --batch 64 \
  --optimizer AdamW --lr0 "$YOLO_LR0" \
  --mix $YOLO_MIX ${YOLO_VAL:+--val-sources $YOLO_VAL} \
  --workers "$(at_least_1 $((CORES - 2)))" --out "$OUT/yolo_obb.pt"

step "SSD's hard negatives"
$PY -m training.mine --model SSD --data data/primitives --out runs/mined-SSD.txt

step "SSD for $SSD_EPOCHS epochs and model_v1 for $CLASSIFIER_EPOCHS, side by side"
$PY -m training.train_ssd --data data/primitives --init weights/ssdlite.pt --run runs/ssd_gpu \
  --epochs "$SSD_EPOCHS" --lr "$SSD_LR" --batch 64 ${SSD_MIX:+--mix $SSD_MIX} \
  ${SSD_VAL:+--val-sources $SSD_VAL} --mined runs/mined-SSD.txt --workers "$(at_least_1 $((CORES / 2)))" --out "$OUT/ssdlite.pt" &
ssd=$!
$PY -m training.train_classifier --data data/primitives --init weights/scene_classifier.pt \
  --run runs/classifier_gpu --epochs "$CLASSIFIER_EPOCHS" --lr 1e-3 --batch 64 \
  --workers "$(at_least_1 $((CORES / 2 - 2)))" --out "$OUT/scene_classifier.pt"
wait $ssd

step "calibrating model_v1"
cp "$OUT/scene_classifier.pt" weights/scene_classifier.pt
$PY -m training.calibrate --data data/primitives --model model_v1 | tee "$OUT/calibration.txt"
cp weights/training-log.json "$OUT/training-log.json"
step "done"
