#!/usr/bin/env bash
# The reference training run: thousands of generated scenes, SPD then SPGM, about an hour on two
# CPU cores, then an export of the pair in every CPU format with its stream defaults.
#
#   scripts/train_reference.sh [CONFIG] [OUT] [FROM]      (default: live runs/reference-live)
#
# With FROM (an earlier run's folder) the run continues that one on its data: SPD fine-tuned from
# FROM's for 10 x 250 steps at Adam 1e-3 (/10 after 6), then SPGM from FROM's for 6 x 250 at 5e-4
# (/10 after 5) on the new SPD's features. The shipped pair is `train_reference.sh live R1` followed
# by `train_reference.sh live R2 R1`.
#
# The tiny configuration (the paper's structure, narrow) also pre-trains its caption stage first, as
# `spgim demo` does, and SPD starts from it (CAPTION_EPOCHS x 250 steps; 0 skips it, live's default).
# The shipped tiny pair is `train_reference.sh tiny T1`, then `... tiny T2 T1` and `... tiny T3 T2`.
#
# Curves: tensorboard --logdir OUT (each stage writes OUT/<stage>/tb). Scenes are 160 px, crops
# 128 px (scale 0.75-1.5 of the scene), so objects span the sizes a 384x224 stream shows them at.
set -euo pipefail
CONFIG=${1:-live}
OUT=${2:-runs/reference-$CONFIG}
FROM=${3:-}
SPGIM=${SPGIM:-spgim}
PYTHON=${PYTHON:-python3}
SCENES=${SCENES:-3000}
DATA="$OUT/data"
[ -n "$FROM" ] && DATA="$FROM/data"
# A continuation starts SPD from FROM's, so it pre-trains no caption stage.
CAPTION_EPOCHS=${CAPTION_EPOCHS:-$([ "$CONFIG" = tiny ] && [ -z "$FROM" ] && echo 4 || echo 0)}
COMMON=(--config "$CONFIG" --data "$DATA" --crop 128 --workers 1)

if [ -n "$FROM" ]; then
    [ -f "$OUT/spd/best.pt" ] || $SPGIM train spd "${COMMON[@]}" --out "$OUT/spd" --init "$FROM/spd/best.pt" \
        --lr 1e-3 --epochs 10 --max-steps-per-epoch 250 --milestones 6 --seed 2
    [ -f "$OUT/spgm/best.pt" ] || $SPGIM train spgm "${COMMON[@]}" --out "$OUT/spgm" --spd "$OUT/spd/best.pt" \
        --init "$FROM/spgm/best.pt" --lr 5e-4 --epochs 6 --max-steps-per-epoch 250 --milestones 5 --seed 2
fi
[ -f "$DATA/scenes.json" ] || $SPGIM data synth --out "$OUT/data" --count "$SCENES" --size 160 --seed 1 --test-fraction 0.04
SPD_INIT=()
if [ "$CAPTION_EPOCHS" -gt 0 ]; then
    [ -f "$OUT/caption/best.pt" ] || $SPGIM train caption "${COMMON[@]}" --out "$OUT/caption" \
        --epochs "$CAPTION_EPOCHS" --max-steps-per-epoch 250
    SPD_INIT=(--init "$OUT/caption/best.pt")
fi
[ -f "$OUT/spd/best.pt" ] || $SPGIM train spd "${COMMON[@]}" "${SPD_INIT[@]}" --out "$OUT/spd" --epochs 10 \
    --max-steps-per-epoch 250 --milestones 8
[ -f "$OUT/spgm/best.pt" ] || $SPGIM train spgm "${COMMON[@]}" --out "$OUT/spgm" --spd "$OUT/spd/best.pt" \
    --epochs 12 --max-steps-per-epoch 250 --milestones 10
$SPGIM export --spd "$OUT/spd/best.pt" --spgm "$OUT/spgm/best.pt" --out "$OUT/export" \
    --formats onnx,openvino,torchscript --precision fp32 --height 224 --width 384 --dynamic --min-size 64x64 --max-size 1280x1280

# Evaluation: the generated test split (whole image and unknown region, single vs multi-object), and
# three generated 1280x720 clips against their true alpha, matted as `spgim matte` would (the
# export's working size, 320 for live, and keyframe interval 8), with SPD on every frame (K=0), and
# with temporal smoothing 0.5 at K=8; then what limits the matte (scripts/guide_study.py).
$SPGIM eval --spd "$OUT/spd/best.pt" --spgm "$OUT/spgm/best.pt" --data "$DATA" --out "$OUT/eval-test.json"
STUDY=()
for SEED in 0 1 2; do
    CLIP="$OUT/clips/clip-$SEED.mp4"
    [ -f "$CLIP" ] || { mkdir -p "$OUT/clips" && $SPGIM data clip --out "$CLIP" --frames 90 --size 1280x720 --fps 30 \
        --seed "$SEED" --alpha "$OUT/clips/clip-$SEED-alpha.mkv"; }
    for K in 8 0; do
        $SPGIM eval --video "$CLIP" --truth "$OUT/clips/clip-$SEED-alpha.mkv" --model "$OUT/export" \
            --backend onnxruntime --keyframe-interval "$K" --json "$OUT/eval-clip-$SEED-k$K.json"
    done
    $SPGIM eval --video "$CLIP" --truth "$OUT/clips/clip-$SEED-alpha.mkv" --model "$OUT/export" \
        --backend onnxruntime --keyframe-interval 8 --smoothing 0.5 --json "$OUT/eval-clip-$SEED-k8-s50.json"
    STUDY+=(--clip "$CLIP:$OUT/clips/clip-$SEED-alpha.mkv")
done
$PYTHON "$(dirname "$0")/guide_study.py" --spd "$OUT/spd/best.pt" --spgm "$OUT/spgm/best.pt" "${STUDY[@]}" \
    --size 320x192 --json "$OUT/guide-study.json"
