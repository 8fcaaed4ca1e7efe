#!/usr/bin/env bash
# GPU readiness check: on one CUDA GPU, in under 8 minutes, print
#   1. training images/s of the 150 px CoroNet step, fp32 and bf16 (batch 10 and 32),
#   2. the real training loop (Lightning, batched augmentation on the device, EMA) vs the bare step,
#   3. the wall time of one fold of the `paper` profile (80 epochs, from scratch), capped at 5 minutes;
#      when the cap stops it, the time per epoch from its metrics.csv and the extrapolated fold and
#      4-fold times.
# Prints figures; asserts nothing.  DATA=../shared/data OUT=runs/gpu-check bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-runs/gpu-check}
CAP=${CAP:-300}
[ -x .venv/bin/coronet ] || make setup >/dev/null
PY=.venv/bin/python
mkdir -p "$OUT"

echo "# GPU check, $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported())"

echo; echo "## 1-2. training step and the real loop"
$PY benchmarks/throughput.py --batch-sizes 10,32 --precisions 32,bf16-mixed --steps 20 --warmup 5 --repeats 50 \
    --loop-images 640

echo; echo "## 3. one fold of the paper profile (80 epochs, --weights none), capped at ${CAP} s"
[ -f "$OUT/dataset/manifest.csv" ] || .venv/bin/coronet data prepare --data "$DATA" --out "$OUT/dataset" >/dev/null
rm -rf "$OUT/paper-fold1"
start=$(date +%s.%N)
timeout "$CAP" .venv/bin/coronet train --dataset "$OUT/dataset" --out "$OUT/paper-fold1" --fold 1 --profile paper \
    --weights none --accelerator gpu --no-progress >"$OUT/paper-fold1.log" 2>&1
status=$?
end=$(date +%s.%N)
$PY - "$OUT/paper-fold1/metrics.csv" "$status" "$start" "$end" <<'PY'
import sys
import pandas as pd
path, status, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
wall = end - start
try:
    m = pd.read_csv(path)
except FileNotFoundError:
    sys.exit(f"no epoch finished in {wall:.0f} s (see the log beside {path})")
per_epoch = m.seconds.iloc[1:].mean() if len(m) > 1 else m.seconds.iloc[0]
print(f"epochs done: {len(m)} of 80 in {wall:.0f} s wall (exit status {status}; 124 = stopped at the cap)")
print(f"training seconds per epoch (after the first): {per_epoch:.1f}; images/s {m.train_images_per_s.iloc[-1]:.0f}")
print(f"last validation accuracy: {m.val_acc.dropna().iloc[-1]:.3f} at epoch {int(m.epoch.iloc[-1])}")
fold = wall if status == 0 else wall / len(m) * 80
print(f"one fold, 80 epochs: {fold / 60:.1f} min {'(measured)' if status == 0 else '(extrapolated)'}; "
      f"4 folds: {4 * fold / 60:.1f} min")
PY
