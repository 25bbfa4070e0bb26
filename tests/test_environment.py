"""babymm.environment: what a run records about the machine and the packages it ran on, checked
against sources other than the code under test (importlib.metadata, grep of /proc/cpuinfo)."""

import json
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
import torch

from babymm.environment import PACKAGES, describe, environment

REQUIRED = ("torch", "transformers", "accelerate", "datasets", "tokenizers", "sentencepiece", "lm-eval", "numpy")


@pytest.fixture(scope="module")
def env():
    return environment()


def test_keys_present_and_json_ready(env):
    assert {"python", "packages", "torch", "hardware", "platform"} <= set(env)
    assert set(REQUIRED) <= set(env["packages"]) and set(REQUIRED) <= set(PACKAGES)
    assert {"version", "git_version", "cuda", "mkldnn", "cpu_capability", "config", "threads"} <= set(env["torch"])
    assert {"cpu_model", "cpu_count", "usable_cores", "gpus"} <= set(env["hardware"])
    assert json.loads(json.dumps(env)) == env  # environment.json holds it as it is


def test_versions_are_the_installed_ones(env):
    for name in REQUIRED:
        assert env["packages"][name] == metadata.version(name), name
    assert env["python"] == platform.python_version()


def test_torch_build(env):
    t = env["torch"]
    assert t["version"] == torch.__version__ and t["cuda"] == torch.version.cuda
    assert t["git_version"] == torch.version.git_version
    assert t["mkldnn"] == torch.backends.mkldnn.is_available()
    assert t["config"][0] == torch.__config__.show().strip().splitlines()[0].strip()
    assert env["hardware"]["gpus"] == [] or torch.cuda.is_available()


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists() or shutil.which("grep") is None, reason="no /proc/cpuinfo")
def test_cpu_model_is_what_cpuinfo_says(env):
    out = subprocess.run(["grep", "-m", "1", "^model name", "/proc/cpuinfo"], capture_output=True, text=True).stdout
    if not out:
        pytest.skip("/proc/cpuinfo names no model (not x86?)")
    assert env["hardware"]["cpu_model"] == out.split(":", 1)[1].strip()
    processors = subprocess.run(["grep", "-c", "^processor", "/proc/cpuinfo"], capture_output=True, text=True)
    assert env["hardware"]["cpu_count"] == int(processors.stdout)


def test_describe_is_one_line_naming_cpu_and_versions(env):
    line = describe(env)
    assert "\n" not in line
    assert env["hardware"]["cpu_model"] in line and torch.__version__ in line and platform.python_version() in line


def test_every_run_records_its_environment(tiny_run):
    import importlib.metadata
    import json

    saved = json.loads((tiny_run / "environment.json").read_text())
    assert saved["packages"]["torch"] == importlib.metadata.version("torch")
    assert saved["packages"]["transformers"] == importlib.metadata.version("transformers")
