#!/usr/bin/env bash
# The GPU check: what vgf does on this machine's GPU, in at most 8 minutes, printed and written under $OUT (default
# runs/gpu-check): versions and devices, the fidelity tests, updates/s of the paper and cpu-small presets, a short
# paper-preset training with evaluation on data generated here, and `vgf bench` of four runs sharing the GPU with
# each one's peak memory. It refuses, with exit 1, a machine where nvidia-smi finds no GPU (before installing
# anything) or where JAX sees none.
#
#   benchmarks/gpu/check.sh                   # with network: installs vgf's cuda extra (and test) first
#   benchmarks/gpu/check.sh --wheels DIR      # air-gapped, JAX with CUDA installed: the rest from DIR (wheels.sh)
#   benchmarks/gpu/check.sh --no-install      # everything installed already
#
# Each part runs under `timeout`, within the check's VGF_CHECK_SECONDS (default 480); a part that fails or runs out
# of time is noted in $OUT/summary.md and the check goes on (exit 1 at the end). Logs: $OUT/logs/<part>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
install=network wheels=
while (($#)); do
  case $1 in
    --wheels) install=wheels wheels=$(realpath "$2"); shift 2 ;;
    --no-install) install=none; shift ;;
    *) echo "usage: $0 [--wheels DIR | --no-install]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT/logs"
OUT=$(realpath "$OUT")
summary=$OUT/summary.md
deadline=$((SECONDS + ${VGF_CHECK_SECONDS:-480}))
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's vgf, in every process the check starts
export RAY_USAGE_STATS_ENABLED=0                          # nothing to report to, and no prompt
vgf=(python -c 'import sys; from vgf.cli import main; sys.exit(main())')
facts=(python benchmarks/gpu/facts.py)
failed=()

note() { echo "$*" | tee -a "$summary"; }
refuse() { echo "error: $*" | tee -a "$summary" >&2; exit 1; }
section() { printf '\n## %s\n' "$1" | tee -a "$summary"; }
last_line() { tail -n 1 "$OUT/logs/$1.log" 2> /dev/null | tee -a "$summary" || true; }  # pytest's tally

# part NAME CAP_S COMMAND...: COMMAND within CAP_S seconds and what is left of the check's time, its output on the
# screen and in logs/NAME.log; the outcome goes to the summary, and the status is returned
part() {
  local name=$1 cap=$2 status=0 began=$SECONDS
  shift 2
  ((cap > deadline - SECONDS)) && cap=$((deadline - SECONDS))
  if ((cap <= 0)); then
    note "$name: skipped, the check's time is spent"
    failed+=("$name")
    return 1
  fi
  timeout --kill-after=15 "$cap" "$@" 2>&1 | tee "$OUT/logs/$name.log" || status=$?
  if ((status == 124 || status == 137)); then  # 137: still running 15 s after timeout's SIGTERM
    note "$name: timed out after $cap s"
  elif ((status)); then
    note "$name: failed (exit $status) after $((SECONDS - began)) s"
  else
    note "$name: done in $((SECONDS - began)) s"
  fi
  ((status == 0)) || failed+=("$name")
  return "$status"
}

echo "# vgf GPU check, $(date -u +%Y-%m-%dT%H:%MZ), revision $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" > "$summary"
command -v nvidia-smi > /dev/null || refuse "no GPU: nvidia-smi (NVIDIA's driver tool) is not on this machine"
gpus=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1) ||
  refuse "no GPU: nvidia-smi finds none ($gpus)"
note "GPU (name, memory, driver): $gpus"

section install
case $install in
  network) part install 240 python -m pip install -e ".[cuda,test]" || refuse "installing vgf's cuda extra failed" ;;
  wheels)
    mapfile -t core < <("${facts[@]}" requirements core)
    part install-core 120 python -m pip install --no-index --find-links "$wheels" "${core[@]}" ||
      refuse "installing from $wheels failed"
    for group in ogbench ray; do
      mapfile -t pins < <("${facts[@]}" requirements "$group")
      if compgen -G "$wheels/${pins[0]%%[[=]*}-*.whl" > /dev/null; then
        part "install-$group" 90 python -m pip install --no-index --find-links "$wheels" "${pins[@]}" || true
      else
        note "$group is not in $wheels (wheels.sh leaves it out over the cap): its part of the check is left out"
      fi
    done ;;
  none) note "nothing installed (--no-install)" ;;
esac
python -c 'import jax; jax.devices("gpu")' > "$OUT/logs/jax-gpu.log" 2>&1 ||
  refuse "no GPU for JAX: $(tail -n 1 "$OUT/logs/jax-gpu.log") (installed: $(python -m pip list 2> /dev/null | grep -i '^jax' |
    tr -s ' ' | paste -sd ',' -)). Install JAX's CUDA plugin of this JAX version; vgf's pin: pip install -e '.[cuda]'"
python -m pip freeze > "$OUT/pip-freeze.txt" 2> /dev/null || true

section versions
part versions 60 "${facts[@]}" versions && cat "$OUT/logs/versions.log" >> "$summary"

section "fidelity tests (tests/fidelity, the CPU tolerances)"
fidelity=(python -m pytest -q -p no:cacheprovider tests/fidelity)
if part fidelity 90 "${fidelity[@]}"; then
  last_line fidelity
else
  last_line fidelity
  note "again with float32 matmuls at full precision (a GPU's default there is TF32):"
  part fidelity-highest 60 env JAX_DEFAULT_MATMUL_PRECISION=highest "${fidelity[@]}" && unset 'failed[-1]'  # TF32's, not vgf's
  last_line fidelity-highest
fi

section "throughput (benchmarks/throughput.py --quick, random data with cube-single's dimensions)"
part throughput 150 python benchmarks/throughput.py --quick --presets paper,cpu-small --no-eval --data-episodes 0 \
  --seeds 1 --json "$OUT/throughput.json" || true
grep -E '^(matmul_gflops|compile_s|updates_per_s|update_ms)' "$OUT/logs/throughput.log" >> "$summary" || true

section "training: vgf, paper preset, with evaluation"
if python -c 'import ogbench' 2> /dev/null; then
  task=cube-single-play-singletask-task1
  part data 90 "${vgf[@]}" data make cube-single-play --episodes 30 --out "$OUT/data" || true
else
  task=bandit
  note "OGBench is not installed: training on the bandit, whose data vgf generates in memory"
fi
rm -rf "$OUT/train"
part train 150 "${vgf[@]}" train vgf --task "$task" --preset paper --steps 2000 --eval-every 1000 --log-every 500 \
  --eval-episodes 10 --data-dir "$OUT/data" --run-dir "$OUT/train" && "${facts[@]}" runs "$OUT/train" | tee -a "$summary"

section "vgf bench: four paper-preset runs sharing the GPU (--gpus-per-run 0.25)"
if python -c 'import ray' 2> /dev/null; then
  rm -rf "$OUT/bench"
  # each process's device memory, every half second: a run's share of the GPU plus its CUDA context
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 > "$OUT/bench-gpu-memory.csv" &
  sampler=$!
  part bench 150 "${vgf[@]}" bench --agents vgf --tasks "$task" --seeds 0,1,2,3 --steps 1000 --eval-every 1000 \
    --eval-episodes 5 --preset paper --gpus-per-run 0.25 --cpus-per-run 1 --num-cpus 4 --data-dir "$OUT/data" \
    --results-dir "$OUT/bench" || true
  kill "$sampler" 2> /dev/null || true
  "${facts[@]}" peak-memory "$OUT/bench-gpu-memory.csv" | tee -a "$summary"
  shopt -s nullglob
  runs=("$OUT"/bench/vgf-*)
  if ((${#runs[@]})); then "${facts[@]}" runs "${runs[@]}" | tee -a "$summary"; fi
else
  note "Ray is not installed: the bench of four runs sharing the GPU is left out"
fi

section end
note "$SECONDS s in all; summary: $summary"
((${#failed[@]} == 0)) || refuse "${#failed[@]} part(s) did not finish: ${failed[*]}"
