"""Run configuration: flags, a YAML config file, and errors."""

import pytest

from babymm.config import parse_config


def test_defaults_and_flags():
    cfg = parse_config(["--curriculum", "random", "--uniform_weight", "0", "--run_eval", "false"])
    assert cfg.data.curriculum == "random" and cfg.loss.uniform_weight == 0.0
    assert cfg.train.run_eval is False and cfg.model.model_type == "git"


def test_yaml_file_then_flags_override(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  seed: 3\n  multimodal_steps: 7\ncurriculum: anti_length\n")
    cfg = parse_config(["--config", str(f), "--seed", "5"])
    assert cfg.train.seed == 5 and cfg.train.multimodal_steps == 7 and cfg.data.curriculum == "anti_length"


def test_saved_run_config_round_trips(tmp_path):
    import json

    cfg = parse_config(["--seed", "9", "--align_weight", "0.5"])
    f = tmp_path / "run_config.json"
    f.write_text(json.dumps(cfg.to_dict()))
    assert parse_config(["--config", str(f)]).to_dict() == cfg.to_dict()


def test_unknown_keys_and_flags_fail(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("learning_rat: 0.1\n")
    with pytest.raises(SystemExit, match="unknown keys \\['learning_rat'\\]"):
        parse_config(["--config", str(f)])
    with pytest.raises(SystemExit):
        parse_config(["--no_such_flag", "1"])


def test_a_lone_cpu_process_uses_every_core_unless_pinned(monkeypatch):
    """`accelerate launch` sets OMP_NUM_THREADS=1 for a CPU process; a single process must not keep it."""
    import os
    from types import SimpleNamespace

    import torch

    from babymm.train import set_threads

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    lone = SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    shared = SimpleNamespace(device=torch.device("cpu"), num_processes=2)
    try:
        torch.set_num_threads(1)
        set_threads(parse_config([]), lone)
        assert torch.get_num_threads() == cores
        torch.set_num_threads(1)
        set_threads(parse_config([]), shared)  # several processes share what the launcher gave
        assert torch.get_num_threads() == 1
        set_threads(parse_config(["--num_threads", "1"]), lone)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
