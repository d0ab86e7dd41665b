#!/usr/bin/env bash
# The reference training run: thousands of generated scenes, SPD then SPGM, about an hour on two
# CPU cores, then an export of the pair in every CPU format with its stream defaults.
#
#   scripts/train_reference.sh [CONFIG] [OUT]      (default: live runs/reference-live)
#
# Curves: tensorboard --logdir OUT (each stage writes OUT/<stage>/tb). Scenes are 160 px, crops
# 128 px (scale 0.75-1.5 of the scene), so objects span the sizes a 384x224 stream shows them at.
set -euo pipefail
CONFIG=${1:-live}
OUT=${2:-runs/reference-$CONFIG}
SPGIM=${SPGIM:-spgim}
SCENES=${SCENES:-3000}
COMMON=(--config "$CONFIG" --data "$OUT/data" --crop 128 --workers 1)

[ -f "$OUT/data/scenes.json" ] || $SPGIM data synth --out "$OUT/data" --count "$SCENES" --size 160 --seed 1 --test-fraction 0.04
[ -f "$OUT/spd/best.pt" ] || $SPGIM train spd "${COMMON[@]}" --out "$OUT/spd" --epochs 10 --max-steps-per-epoch 250 --milestones 8
[ -f "$OUT/spgm/best.pt" ] || $SPGIM train spgm "${COMMON[@]}" --out "$OUT/spgm" --spd "$OUT/spd/best.pt" \
    --epochs 12 --max-steps-per-epoch 250 --milestones 10
$SPGIM export --spd "$OUT/spd/best.pt" --spgm "$OUT/spgm/best.pt" --out "$OUT/export" \
    --formats onnx,openvino,torchscript --precision fp32 --height 224 --width 384 --dynamic --min-size 64x64 --max-size 1280x1280

# Evaluation: the generated test split (whole image and unknown region, single vs multi-object), and
# three generated 1280x720 clips against their true alpha, matted as `spgim matte` would (the
# export's working size 384 and keyframe interval 8) and with SPD on every frame (K=0).
$SPGIM eval --spd "$OUT/spd/best.pt" --spgm "$OUT/spgm/best.pt" --data "$OUT/data" --out "$OUT/eval-test.json"
for SEED in 0 1 2; do
    CLIP="$OUT/clips/clip-$SEED.mp4"
    [ -f "$CLIP" ] || { mkdir -p "$OUT/clips" && $SPGIM data clip --out "$CLIP" --frames 90 --size 1280x720 --fps 30 \
        --seed "$SEED" --alpha "$OUT/clips/clip-$SEED-alpha.mkv"; }
    for K in 8 0; do
        $SPGIM eval --video "$CLIP" --truth "$OUT/clips/clip-$SEED-alpha.mkv" --model "$OUT/export" \
            --backend onnxruntime --keyframe-interval "$K" --json "$OUT/eval-clip-$SEED-k$K.json"
    done
done
