"""Shared fixtures: one tiny world and one tiny end-to-end run per test session."""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["--preset", "tiny"]
TINY_TRAIN = ["--text_pretrain_steps", "8", "--multimodal_steps", "12", "--batch_size", "16",
              "--text_batch_size", "8", "--logging_steps", "4", "--warmup_steps", "2"]


@pytest.fixture(scope="module")
def one_thread():
    """Toy tensors gain nothing from threads, and threads spin when the cores are shared; a module
    opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    from data_prep import world

    out = tmp_path_factory.mktemp("data") / "world"
    world.generate_world(out, word_budget=20_000, seed=0, eval_scale=0.1)
    return out


@pytest.fixture(scope="session")
def tiny_run(tiny_world, tmp_path_factory):
    """A whole run at toy size: data prep, both stages, save, eval."""
    from babymm import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(out), "--curriculum", "length",
                     *TINY_MODEL, *TINY_TRAIN])
    assert rc == 0
    return out


def load_script(relative_path: str, name: str) -> ModuleType:
    """A script of the repository (benchmarks/, scripts/: not packages) imported as module `name`,
    registered in sys.modules (its dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
