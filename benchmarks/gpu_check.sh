#!/usr/bin/env bash
# What only a GPU can show, in one run of about 8 minutes on one H200; every figure is printed on
# a line starting `gpu_check:`.
#   1. train_cuda: `raydistill train` of a short Fashion-MNIST job (digits when the Fashion-MNIST
#      files cannot be had) with the teacher stage, the teacher pool's actors and the student's
#      train workers on the GPU (scaling.use_gpu, scaling.resources_per_worker.GPU: 0.4 for each
#      of 2 workers, scaling.teacher_pool.num_gpus: 0.2): each stage's last epoch (val accuracy,
#      samples/s), the test table, the wall time and the GPU memory and utilisation seen.
#   2. text_bf16: bf16 forward/backward of the BBC News MiniLM teacher and its 2-layer student
#      (benchmarks/text_bf16.py): samples/s training and inferring, peak memory, bf16 vs fp32.
#   3. teacher_epoch: one full-size epoch (48k images) of the Fashion-MNIST ResNet-18 teacher
#      (width 64) by `raydistill teacher` on one GPU worker: samples/s and val accuracy.
#   4. lm_bf16: `raydistill train jobs/lm-tiny.yaml` (causal-LM distillation, top-64 teacher
#      outputs from the pool) with train.precision: bf16, the teacher stage, the pool's actor and
#      2 train workers on the GPU: each stage's last epoch line and the test table (perplexity,
#      next-token agreement with the teacher).
#   5. lm_generate: `raydistill train jobs/lm-tiny-seqkd.yaml` (sequence-level KD: the pool's
#      actor answers every train prompt with KV-cached decoding) with that actor on the GPU:
#      the pool's answers line (answers, tokens, seconds), each stage's last epoch, the table.
# --cpu-smoke runs the same steps at tiny size on the CPU (a few minutes on 2 cores), to check the
# script where there is no GPU. The venv is scripts/setup.sh's (VENV=... picks another); the
# Fashion-MNIST files are installed with apt-get when missing (FASHION_MNIST_DIR=... points at a
# copy instead); runs and logs go to GPU_CHECK_DIR (default: a new directory under /tmp).
#   benchmarks/gpu_check.sh [--cpu-smoke]
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
case "${1:-}" in
  --cpu-smoke) smoke=1 ;;
  "") ;;
  *) echo "usage: $0 [--cpu-smoke]" >&2; exit 2 ;;
esac
say() { echo "gpu_check: $*"; }
started=$SECONDS
failed=0
out="${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu-check-XXXXXX)}"
mkdir -p "$out"
unset RAY_ADDRESS  # every raydistill command below starts a Ray of its own on this machine
export PYTHONUNBUFFERED=1
say "mode $([ $smoke = 1 ] && echo cpu-smoke || echo gpu), logs and runs in $out"

# ------------------------------------------------------------------ venv and device
if ! bash scripts/setup.sh >"$out/setup.log" 2>&1; then
  say "FAIL setup: scripts/setup.sh could not build ${VENV:-.venv} (no package index here?):"
  tail -5 "$out/setup.log"
  exit 1
fi
venv="${VENV:-.venv}"
py="$venv/bin/python"
rd="$venv/bin/raydistill"
if [ $smoke = 1 ]; then
  device=cpu
  say "device: cpu (smoke), torch $("$py" -c 'import torch; print(torch.__version__)')"
else
  device=cuda
  if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "FAIL device: torch $("$py" -c 'import torch; print(torch.__version__)') sees no CUDA device"
    exit 1
  fi
  say "device: $("$py" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")')"
fi

# ------------------------------------------------------------------ Fashion-MNIST files
have_fashion() { [ -f "$1/train-images-idx3-ubyte.gz" ] && [ -f "$1/t10k-labels-idx1-ubyte.gz" ]; }
fashion="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if ! have_fashion "$fashion" && [ -z "${FASHION_MNIST_DIR:-}" ]; then
  # no network (a device machine): apt-get fails or hangs on its mirrors, so it gets a bound
  timeout 300 bash scripts/setup-fashion-mnist.sh >"$out/apt.log" 2>&1 ||
    say "note: apt-get install dataset-fashion-mnist failed: $(tail -1 "$out/apt.log")"
fi
data=()
if have_fashion "$fashion"; then
  job=jobs/fashion-mnist.yaml
  data=(--set "data.path=$fashion")
else
  job=jobs/digits.yaml
  say "note: no Fashion-MNIST files in $fashion: train_cuda runs digits, teacher_epoch is skipped"
fi

# ------------------------------------------------------------------ helpers
# GPU memory in use and utilisation, sampled every second while a step runs
watch_gpu() {
  [ $smoke = 1 ] && return
  while :; do
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits 2>/dev/null
    sleep 1
  done >"$1" &
  echo $! >"$1.pid"
}
gpu_seen() {
  if [ $smoke = 1 ]; then echo "GPU: n/a (cpu-smoke)"; return; fi
  kill "$(cat "$1.pid")" 2>/dev/null
  awk -F', *' '$1 > m { m = $1 } $2 > u { u = $2 } END {
    printf "GPU seen: up to %d MiB in use, up to %d%% utilisation\n", m, u }' "$1"
}
# "[stage] epoch E/N ... val_acc A ... R samples/s" -> one figure per stage, its last epoch
epochs() {
  sed -nE 's/.*\[([a-z_ -]+)\] epoch ([0-9]+\/[0-9]+) .* val_acc ([0-9.]+) .* ([0-9]+) samples\/s.*/\1: epoch \2 val_acc \3, \4 samples\/s/p' "$1" |
    awk -F: '{ last[$1] = $0 } END { for (s in last) print last[s] }' | sort
}
step() {  # step NAME SECONDS LOG COMMAND...: run with a bound; on failure say so and count it
  local name=$1 bound=$2 log=$3
  shift 3
  local t0=$SECONDS
  if timeout "$bound" "$@" >"$log" 2>&1; then
    say "$name: done in $((SECONDS - t0)) s"
    return 0
  fi
  local rc=$?
  failed=$((failed + 1))
  say "FAIL $name (exit $rc after $((SECONDS - t0)) s; bound ${bound} s): last lines of $log:"
  tail -15 "$log" | sed 's/^/    /'
  return 1
}

# ------------------------------------------------------------------ 1. train_cuda
common=(--set "output.storage_path=$out/runs" --set train.baseline=false)
if [ $smoke = 1 ]; then
  size=(--set teacher.train.epochs=1 --set train.epochs=1)
  [ "$job" = jobs/fashion-mnist.yaml ] && size+=(--set data.subset=0.01 --set teacher.args.width=8 --set student.args.width=8)
  place=(--set scaling.use_gpu=false --set scaling.teacher_pool.num_gpus=0)
else
  size=(--set teacher.train.epochs=2 --set train.epochs=2)
  [ "$job" = jobs/fashion-mnist.yaml ] && size+=(--set data.subset=0.1)
  # one GPU for all: 2 workers x 0.4 + the pool's actor 0.2
  place=(--set scaling.workers=2 --set scaling.use_gpu=true
    --set "scaling.resources_per_worker={GPU: 0.4}" --set scaling.teacher_pool.num_gpus=0.2)
fi
log="$out/train_cuda.log"
watch_gpu "$out/train_cuda.gpu"
if step train_cuda "$([ $smoke = 1 ] && echo 900 || echo 300)" "$log" \
  "$rd" train "$job" --set name=gpu-check-train "${data[@]}" "${common[@]}" "${size[@]}" "${place[@]}"; then
  epochs "$log" | while read -r line; do say "train_cuda $(basename "$job" .yaml) $line"; done
  grep -E '^\|' "$log" | sed 's/^/gpu_check: train_cuda   /'
fi
say "train_cuda $(gpu_seen "$out/train_cuda.gpu")"

# ------------------------------------------------------------------ 2. text_bf16
if [ $smoke = 1 ]; then
  text=(--device cpu --batch 4 --seq 16 --steps 2)
else
  text=(--device cuda --batch 64 --seq 128 --steps 30)
fi
if step text_bf16 300 "$out/text_bf16.log" "$py" benchmarks/text_bf16.py "${text[@]}"; then
  grep '^gpu_check:' "$out/text_bf16.log"
fi

# ------------------------------------------------------------------ 3. teacher_epoch
if [ "$job" = jobs/fashion-mnist.yaml ]; then
  if [ $smoke = 1 ]; then
    full=(--set data.subset=0.01 --set teacher.args.width=8 --set scaling.use_gpu=false)
  else
    full=(--set scaling.use_gpu=true)  # data.subset null, width 64: the job's own size
  fi
  log="$out/teacher_epoch.log"
  watch_gpu "$out/teacher_epoch.gpu"
  if step teacher_epoch "$([ $smoke = 1 ] && echo 600 || echo 300)" "$log" \
    "$rd" teacher jobs/fashion-mnist.yaml --set name=gpu-check-teacher "${data[@]}" \
    --set "output.storage_path=$out/runs" --set teacher.train.epochs=1 --set scaling.workers=1 \
    "${full[@]}"; then
    epochs "$log" | while read -r line; do say "teacher_epoch fashion-mnist $line"; done
  fi
  say "teacher_epoch $(gpu_seen "$out/teacher_epoch.gpu")"
else
  say "teacher_epoch: skipped (no Fashion-MNIST files)"
fi

# ------------------------------------------------------------------ 4. lm_bf16
if bash scripts/setup-lm-tiny.sh >"$out/lm_setup.log" 2>&1; then
  if [ $smoke = 1 ]; then
    lm=(--set teacher.train.epochs=1 --set train.epochs=1 --set scaling.workers=1)
  else
    lm=(--set scaling.use_gpu=true --set "scaling.resources_per_worker={GPU: 0.4}"
      --set scaling.teacher_pool.num_gpus=0.2)
  fi
  log="$out/lm_bf16.log"
  watch_gpu "$out/lm_bf16.gpu"
  if step lm_bf16 "$([ $smoke = 1 ] && echo 600 || echo 240)" "$log" \
    "$rd" train jobs/lm-tiny.yaml --set name=gpu-check-lm --set "output.storage_path=$out/runs" \
    --set train.precision=bf16 --set output.report=false "${lm[@]}"; then
    grep -E '\] epoch [0-9]+/' "$log" | awk '{ k = $1 } { last[k] = $0 } END { for (s in last) print last[s] }' |
      sed 's/^/gpu_check: lm_bf16 /'
    grep -E '^\|' "$log" | sed 's/^/gpu_check: lm_bf16   /'
  fi
  say "lm_bf16 $(gpu_seen "$out/lm_bf16.gpu")"
else
  say "lm_bf16: skipped (scripts/setup-lm-tiny.sh failed: $(tail -1 "$out/lm_setup.log"))"
fi

# ------------------------------------------------------------------ 5. lm_generate
if [ -f data/bbc-pairs.jsonl ]; then
  if [ $smoke = 1 ]; then
    gen=(--set teacher.train.epochs=1 --set train.epochs=1 --set data.subset=0.03
      --set lm.generate.max_new_tokens=8)
  else
    gen=(--set scaling.teacher_pool.num_gpus=1)
  fi
  log="$out/lm_generate.log"
  watch_gpu "$out/lm_generate.gpu"
  if step lm_generate "$([ $smoke = 1 ] && echo 600 || echo 180)" "$log" \
    "$rd" train jobs/lm-tiny-seqkd.yaml --set name=gpu-check-seqkd \
    --set "output.storage_path=$out/runs" --set output.report=false "${gen[@]}"; then
    grep -E '^\[teacher\] generated ' "$log" | sed 's/^/gpu_check: lm_generate /'
    grep -E '\] epoch [0-9]+/' "$log" | awk '{ k = $1 } { last[k] = $0 } END { for (s in last) print last[s] }' |
      sed 's/^/gpu_check: lm_generate /'
    grep -E '^\|' "$log" | sed 's/^/gpu_check: lm_generate   /'
  fi
  say "lm_generate $(gpu_seen "$out/lm_generate.gpu")"
else
  say "lm_generate: skipped (no data/bbc-pairs.jsonl: scripts/setup-lm-tiny.sh writes it)"
fi

say "done in $((SECONDS - started)) s; $failed step(s) failed"
[ "$failed" = 0 ]
