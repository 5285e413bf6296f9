"""Facts for the GPU check scripts (check.sh, wheels.sh), printed one a line.

    python benchmarks/gpu/facts.py requirements GROUP     # core, ogbench or ray: the pins of one part of the check
    python benchmarks/gpu/facts.py versions               # Python, JAX, its plugins, devices, against vgf's pins
    python benchmarks/gpu/facts.py peak-memory SAMPLES    # each process's peak in nvidia-smi samples
    python benchmarks/gpu/facts.py runs RUN_DIR...        # each run's devices, updates/s and last evaluation

The groups are what a GPU machine with JAX (and its CUDA plugin) installed still needs, so that a folder of wheels
can bring each part of the check separately: `core` runs the fidelity tests, the throughput benchmark and training on
the bandit; `ogbench` adds OGBench's cube tasks; `ray` adds `vgf bench`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
OPTIONAL_GROUPS = {"ogbench": ("ogbench", "mujoco"), "ray": ("ray",)}
BROUGHT_BY_JAX = ("jax", "jaxlib", "numpy")  # the machine's JAX install, used as it is
NOT_USED_BY_THE_CHECK = ("h5py", "minari")  # D4RL and Minari files


def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def requirement_name(requirement: str) -> str:
    return re.split(r"[\[=<>!~; ]", requirement, maxsplit=1)[0].lower()


def requirements(group: str) -> list[str]:
    """The pinned requirements of `group`: its names in vgf's dependencies, or for `core` the dependencies and the test
    extra that no other group, JAX's install or an unused part takes."""
    listed = project()["dependencies"] + project()["optional-dependencies"]["test"]
    if group in OPTIONAL_GROUPS:
        return [r for r in listed if requirement_name(r) in OPTIONAL_GROUPS[group]]
    taken = {*BROUGHT_BY_JAX, *NOT_USED_BY_THE_CHECK, *(name for names in OPTIONAL_GROUPS.values() for name in names)}
    return [r for r in listed if requirement_name(r) not in taken]


def pinned_version(name: str) -> str:
    return next(r.split("==")[1] for r in project()["dependencies"] if requirement_name(r) == name)


def versions() -> list[str]:
    import jax

    from vgf.training import devices_line  # imports vgf.envs, which sets MUJOCO_GL on a headless machine

    plugins = sorted(
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if re.match(r"jax[-_](cuda|rocm)", dist.metadata["Name"] or "")
    )
    lines = [
        f"python {sys.version.split()[0]}, numpy {importlib.metadata.version('numpy')}",
        f"jax {jax.__version__}, jaxlib {importlib.metadata.version('jaxlib')}, plugins: {', '.join(plugins) or 'none'}",
        devices_line(),
        "device kinds: " + ", ".join(device.device_kind for device in jax.devices()),
        f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '(unset)')}",
    ]
    if jax.__version__ != pinned_version("jax"):
        lines.append(f"warning: JAX {jax.__version__} is not vgf's pin {pinned_version('jax')}: "
                     "its figures may differ from those of a pinned install")
    return lines


def peak_memory(samples: Path) -> list[str]:
    """Lines of `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms N` output: the
    peak MiB of each process seen, then their count and sum."""
    peaks: dict[str, int] = {}
    for line in samples.read_text().splitlines():
        pid, _, used = (field.strip() for field in line.partition(","))
        if used.isdigit():
            peaks[pid] = max(peaks.get(pid, 0), int(used))
    if not peaks:
        return ["no process was seen on the GPU"]
    return [f"pid {pid}: peak {used} MiB" for pid, used in sorted(peaks.items())] + [
        f"{len(peaks)} processes, {sum(peaks.values())} MiB at their peaks together"
    ]


def run_lines(run_dir: Path) -> list[str]:
    """A run directory's devices (config.json) and its last evaluated row (metrics.jsonl): updates/s, success by budget."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evaluated = [row for row in rows if any(key.startswith("eval/") for key in row)]
    if not evaluated:
        return [f"{run_dir.name}: no evaluation yet ({rows[-1]['step'] if rows else 0} steps logged)"]
    last = evaluated[-1]
    budgets = sorted(int(key.split("/")[1].split("_")[1]) for key in last if key.endswith("/success"))
    success = ", ".join(f"{budget}: {last[f'eval/budget_{budget}/success']:.2f}" for budget in budgets)
    devices = ", ".join(json.loads((run_dir / "config.json").read_text()).get("jax_devices", ["?"]))
    return [f"{run_dir.name} on {devices}: step {last['step']}, {last['updates_per_s']:.1f} updates/s, "
            f"success by budget {success}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("requirements").add_argument("group", choices=("core", *OPTIONAL_GROUPS))
    commands.add_parser("versions")
    commands.add_parser("peak-memory").add_argument("samples", type=Path)
    commands.add_parser("runs").add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "requirements":
        lines = requirements(args.group)
    elif args.command == "versions":
        lines = versions()
    elif args.command == "peak-memory":
        lines = peak_memory(args.samples)
    else:
        lines = [line for run_dir in args.run_dirs for line in run_lines(run_dir)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
