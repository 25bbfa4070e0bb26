"""What a run ran on: package versions, torch's build, the hardware.

Why: a run is reproducible bit for bit only on the same hardware and the same package
versions. Elsewhere the same seed gives other numbers: the float kernels torch picks differ
by CPU (AVX2 on one, AVX-512 on another), by thread count and by library version, so sums
are taken in another order and the runs part after the first step. (A fresh clone on an
Intel Xeon scored BLiMP 0.895, EWoK 0.611 and separability 0.855 where results/, made on an
AMD EPYC, has 0.868, 0.556 and 0.787: within the seed spread, not equal.) So every run
writes `environment()` beside its results (RUN/environment.json), and a difference between
two runs can be told apart from a difference between two machines.

`environment()` only reads (package metadata, torch's build constants, /proc/cpuinfo, the
GPUs torch sees) and imports nothing but the standard library and torch.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# the distributions whose versions change what a run computes (lm-eval: the scores)
PACKAGES = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "sentencepiece", "lm-eval",
            "numpy", "safetensors")
# environment variables that change threads or kernels
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "CUBLAS_WORKSPACE_CONFIG",
            "PYTHONHASHSEED")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None if it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first `model name` of /proc/cpuinfo; else what `platform` knows (not Linux)."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_build() -> dict[str, Any]:
    import torch

    show = torch.__config__.show().strip().splitlines()
    try:
        capability = torch.backends.cpu.get_cpu_capability()  # the SIMD kernels this CPU gets
    except (AttributeError, RuntimeError):
        capability = None
    return {
        "version": torch.__version__,
        "git_version": getattr(torch.version, "git_version", None),
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "debug": bool(getattr(torch.version, "debug", False)),
        "cpu_capability": capability,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "mkl": torch.backends.mkl.is_available(),
        "openmp": torch.backends.openmp.is_available(),
        "config": [line.strip() for line in show],  # torch.__config__.show(): compiler, BLAS, ISA
        "threads": torch.get_num_threads(),
    }


def gpus() -> list[dict[str, Any]]:
    """The GPUs torch can use (none when CUDA/ROCm is not available)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)})
    return out


def environment() -> dict[str, Any]:
    """Package versions, torch's build and the hardware of this process, as a JSON-ready dict:
    `python`, `packages` (distribution -> version), `torch` (its build), `hardware` (CPU model,
    cores, GPUs), `platform` and the thread/kernel environment variables that are set."""
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cudnn = torch.backends.cudnn.version() if torch.cuda.is_available() else None
    return {
        "python": platform.python_version(),
        "python_build": sys.version,
        "packages": package_versions(),
        "torch": {**torch_build(), "cudnn": cudnn},
        "hardware": {
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "usable_cores": cores,
            "machine": platform.machine(),
            "gpus": gpus(),
        },
        "platform": platform.platform(),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }


def describe(env: dict[str, Any]) -> str:
    """One line for a results file: cores, CPU (and the SIMD kernels torch uses), GPUs, torch, Python."""
    hw, t = env["hardware"], env["torch"]
    cpu = hw["cpu_model"] + (f"; torch kernels {t['cpu_capability']}" if t.get("cpu_capability") else "")
    gpu = ", ".join(g["name"] for g in hw["gpus"]) or "no GPU"
    return (f"{hw['cpu_count']} CPU cores ({cpu}), {gpu}, torch {t['version']}, Python {env['python']}, "
            f"{t['threads']} threads")
