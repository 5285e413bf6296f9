"""Readiness for a GPU, checked on CPU: the cuda extra's pins, and benchmarks/gpu/check.sh refusing a machine without
a GPU (the memory share of runs sharing a GPU is in test_sweep.py, env workers that never fork in test_envs_eval.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = REPO / "benchmarks" / "gpu" / "check.sh"


def pins(requirements: list[str]) -> dict[str, str]:
    """{name: version} of `name[extras]==version` requirements."""
    return {r.split("==")[0].split("[")[0]: r.split("==")[1] for r in requirements}


def test_the_cuda_extra_pins_jaxs_cuda_plugin_at_the_jax_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    jax_pin = pins(project["dependencies"])["jax"]
    assert pins(project["dependencies"])["jaxlib"] == jax_pin
    assert pins(project["optional-dependencies"]["cuda"]) == {"jax-cuda12-plugin": jax_pin, "jax-cuda12-pjrt": jax_pin}
    assert "jax-cuda12-plugin[with-cuda]" in project["optional-dependencies"]["cuda"][0]  # brings the CUDA libraries


def run_check(tmp_path, nvidia_smi: str | None, *args: str, **env) -> subprocess.CompletedProcess:
    """check.sh with `nvidia-smi` replaced by a script of `nvidia_smi`, or absent for None (the same on any machine)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    path = [str(fake), *(d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "nvidia-smi").exists())]
    if nvidia_smi is not None:
        (fake / "nvidia-smi").write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        (fake / "nvidia-smi").chmod(0o755)
    environment = {**os.environ, "PATH": os.pathsep.join(path), "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(CHECK), *args], capture_output=True, text=True, env=environment, timeout=120)


@pytest.mark.parametrize("nvidia_smi, message", [
    (None, "error: no GPU: nvidia-smi (NVIDIA's driver tool) is not on this machine"),
    ("echo 'No devices were found'; exit 6", "error: no GPU: nvidia-smi finds none (No devices were found)"),
])
def test_the_gpu_check_refuses_a_machine_without_a_gpu_before_installing(tmp_path, nvidia_smi, message):
    finished = run_check(tmp_path, nvidia_smi)  # without --no-install: it would install first, if it went on
    assert finished.returncode == 1
    assert message in finished.stderr
    assert not (tmp_path / "out" / "logs" / "install.log").exists()
    assert message in (tmp_path / "out" / "summary.md").read_text()


def test_the_gpu_check_refuses_when_jax_sees_no_gpu(tmp_path):
    finished = run_check(tmp_path, "echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 570.00'", "--no-install", JAX_PLATFORMS="cpu")
    assert finished.returncode == 1
    assert "error: no GPU for JAX:" in finished.stderr and "Install JAX's CUDA plugin" in finished.stderr
    assert not (tmp_path / "out" / "logs" / "versions.log").exists()  # stopped before the first measurement


def test_the_wheel_groups_cover_every_dependency_once():
    sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
    try:
        import facts
    finally:
        sys.path.pop(0)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    grouped = [r for group in ("core", *facts.OPTIONAL_GROUPS) for r in facts.requirements(group)]
    left_to_others = [r for r in project["dependencies"] if facts.requirement_name(r) in
                      (*facts.BROUGHT_BY_JAX, *facts.NOT_USED_BY_THE_CHECK)]
    assert sorted(grouped + left_to_others) == sorted(project["dependencies"] + project["optional-dependencies"]["test"])
    assert "flax==0.12.8" in facts.requirements("core") and facts.requirements("ray") == ["ray[client]==2.60.0"]
