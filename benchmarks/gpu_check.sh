#!/usr/bin/env bash
# GPU readiness check for a session that has a lent CUDA GPU (never run by CI): under 8 minutes on one GPU
# (the steps' time limits add up to 455 s).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Writes OUT_DIR/gpu_check.json (default: gpu_check/ under the repository root) holding
#   - "bench": one `giacheck bench --device cuda --json --models M` row per model (the 32 px zoo, Swin-T and
#     ResNet-18 at 224 px; K = 8 stacked against 8 in a row), each under its own time limit, and the peak GPU
#     memory of both paths for ResNet-18 at 224 px;
#   - "paper_claims": one paper-profile case per suite module at reduced counts (`giacheck run --profile paper
#     --iterations 200 --restarts 4`, 25 s each), with SSIM, wall time and whether its restarts ran stacked;
#   - "smoke_suites": `pytest suites/ -n 1 --giacheck-device cuda -k <subset>`: its exit status and summary line
#     (smoke baselines were recorded on CPUs; a GPU's rounding may move a case outside its tolerance);
#   - the device's name, torch and CUDA versions.
# Each step has its own time limit, so one slow step cannot take the others' time; the JSON is written whatever
# fails, with each step's exit status.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu_check}"
mkdir -p "$OUT"
export GIACHECK_CACHE="${GIACHECK_CACHE:-$OUT/cache}"

: > "$OUT/bench.jsonl"
for spec in resnet18_cifar:32 swin_t_cifar:32 convnext_t_cifar:32 swin_t:224 resnet18:224; do
  model="${spec%%:*}" res="${spec##*:}"
  timeout 40 giacheck bench --device cuda --models "$model" --resolution "$res" --steps 10 --repeats 2 --json \
    2>> "$OUT/bench.err" | python -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["models"][0]))' \
    >> "$OUT/bench.jsonl"
done
timeout 40 giacheck bench --device cuda --models resnet18 --resolution 224 --steps 2 --repeats 1 --memory --json \
  > "$OUT/memory.json" 2>> "$OUT/bench.err"

CASES=(
  "resnet18_cifar-32-bn_eval-bs1-stats_none"          # Table 1 legacy CNN: the positive control
  "resnet18-224-bn_train-bs1-stats_exact"             # Fig. 2 / Fig. 1 canonical ResNet-18
  "swin_t-224-bn_eval-bs2-stats_none"                 # Fig. 3 canonical batch size
  "swin_t_cifar-32-bn_eval-bs1-stats_none"            # Table 1 low resolution / Fig. 4
  "yolov8n_basicblock-256-bn_eval-bs1-stats_none-state_bncal"  # Fig. 5 YOLO (calibrated BN: not vacuous)
)
: > "$OUT/paper.jsonl"
for case in "${CASES[@]}"; do
  start=$(date +%s)
  if timeout 25 giacheck run "$case" --profile paper --device cuda --iterations 200 --restarts 4 --json \
      > "$OUT/run.json" 2> "$OUT/run.err"; then rc=0; else rc=$?; fi
  python - "$case" "$rc" "$(( $(date +%s) - start ))" "$OUT/run.json" "$OUT/run.err" >> "$OUT/paper.jsonl" <<'PY'
import json, sys
case, rc, wall, out, err = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
row = {"case": case, "rc": rc, "wall_s": wall}
try:
    r = json.load(open(out))
    row.update(ssim=r["ssim"], restarts=r["restarts"], batched=r["attack"]["batched"],
               per_iteration_s=r["timings"]["per_iteration_s"])
except Exception:
    row["error"] = open(err).read()[-2000:]
print(json.dumps(row))
PY
done

timeout 90 python -m pytest suites/test_table1_legacy_cnn.py suites/test_table1_lowres.py -n 1 -q \
  --giacheck-device cuda -k "post_act_inference_mode or unadapted_stem" -p no:cacheprovider \
  > "$OUT/suites.log" 2>&1
echo "$?" > "$OUT/suites.rc"

python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def read(name, default=None):
    try:
        return (out / name).read_text()
    except OSError:
        return default
import torch
report = {
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda,
    "bench": {"rows": [json.loads(line) for line in (read("bench.jsonl") or "").splitlines() if line.strip()],
              "memory": json.loads(read("memory.json") or "null"), "stderr_tail": (read("bench.err") or "")[-2000:]},
    "paper_claims": [json.loads(line) for line in (read("paper.jsonl") or "").splitlines() if line],
    "smoke_suites": {"rc": int(read("suites.rc", "-1")), "tail": (read("suites.log") or "")[-3000:]},
}
(out / "gpu_check.json").write_text(json.dumps(report, indent=2))
print(out / "gpu_check.json")
PY
