#!/usr/bin/env bash
# Fill a folder with the wheels that `check.sh --wheels DIR` installs on an air-gapped GPU machine whose JAX (with its
# CUDA plugin) is installed already. Run it where pip reaches the package registry, then carry the folder over:
#
#   benchmarks/gpu/wheels.sh PYTHON_VERSION PLATFORM DIR     e.g. benchmarks/gpu/wheels.sh 3.12 manylinux_2_28_x86_64 wheels
#
# The GPU machine tells both values: `python -V`, and the first manylinux tag of `python -m pip debug --verbose`.
# Left out, as the machine's JAX brought them: JAX, jaxlib, their NumPy, SciPy, ml_dtypes and opt_einsum, and the
# CUDA wheels. The groups of facts.py go in one after another while the folder stays within VGF_WHEELS_CAP_MIB
# (default 64) MiB: core must fit; ogbench (the cube task) and ray (`vgf bench`) are left out, with a message, when
# they do not, and check.sh then trains on the bandit, or skips the bench.
set -euo pipefail
shopt -s nullglob
if (($# != 3)); then
  echo "usage: $0 PYTHON_VERSION PLATFORM DIR   (e.g. 3.12 manylinux_2_28_x86_64 wheels)" >&2
  exit 2
fi
python_version=$1 platform=$2 dir=$3
cap_bytes=$((${VGF_WHEELS_CAP_MIB:-64} * 1024 * 1024))
facts=(python "$(dirname "$0")/facts.py")

# pip takes a platform tag literally, but a machine of manylinux_2_28 installs the wheels of every older glibc too
[[ $platform =~ ^manylinux2014_(.+)$ ]] && platform=manylinux_2_17_${BASH_REMATCH[1]}
platforms=("$platform")
if [[ $platform =~ ^manylinux_2_([0-9]+)_(.+)$ ]]; then
  arch=${BASH_REMATCH[2]}
  for ((glibc = BASH_REMATCH[1] - 1; glibc >= 5; glibc--)); do
    platforms+=("manylinux_2_${glibc}_$arch")
    case $glibc in 17) platforms+=("manylinux2014_$arch") ;; 12) platforms+=("manylinux2010_$arch") ;; 5) platforms+=("manylinux1_$arch") ;; esac
  done
fi

bytes() { local total=0 wheel; for wheel in "$@"; do total=$((total + $(stat -c %s "$wheel"))); done; echo "$total"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

mkdir -p "$dir"
trap 'rm -rf "${staged:-}"' EXIT
for group in core ogbench ray; do
  staged=$(mktemp -d)
  mapfile -t pins < <("${facts[@]}" requirements "$group")
  python -m pip download --quiet --only-binary=:all: --python-version "$python_version" "${platforms[@]/#/--platform=}" \
    --dest "$staged" "${pins[@]}"
  rm -f "$staged"/{jax,jaxlib,numpy,scipy,ml_dtypes,opt_einsum}-*.whl "$staged"/{jax_cuda,jax_plugins,nvidia_}*.whl
  for wheel in "$dir"/*.whl; do rm -f "$staged/${wheel##*/}"; done  # already brought by an earlier group
  have=$(bytes "$dir"/*.whl) adds=$(bytes "$staged"/*.whl)
  if ((have + adds <= cap_bytes)); then
    if ((adds)); then mv "$staged"/*.whl "$dir"/; fi
    echo "$group (${pins[*]}): $(mib "$adds"), added"
  elif [[ $group == core ]]; then
    echo "error: core alone is $(mib "$adds"), over the cap of $(mib "$cap_bytes"); its largest wheels:" >&2
    ls -S "$staged"/*.whl | head -n 5 | xargs -n 1 basename >&2
    exit 1
  else
    echo "$group (${pins[*]}): $(mib "$adds"), left out: the folder would hold $(mib $((have + adds))), over the cap of $(mib "$cap_bytes")"
  fi
  rm -rf "$staged"
done
echo "$dir: $(ls "$dir"/*.whl | wc -l) wheels, $(mib "$(bytes "$dir"/*.whl)") of $(mib "$cap_bytes")"
