"""The shipped config files: accelerate's launch configs load with accelerate's own reader as the
setups they name, the 2024 baselines' recipe parses into the values the BabyLM 2024 baselines
used (listed here by hand), and a launcher's mixed precision that train.py would override is
refused rather than ignored."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from babymm import train
from babymm.config import parse_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name,kind,machines", [("single_gpu", "NO", 1), ("ddp", "MULTI_GPU", 1),
                                                ("fsdp", "FSDP", 1), ("multi_node", "MULTI_GPU", 2)])
def test_accelerate_configs_load_as_what_they_name(name, kind, machines):
    cfg = load_config_from_file(str(CONFIGS / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and cfg.num_machines == machines
    assert cfg.mixed_precision == "no"  # train.py's --mixed_precision decides, and is recorded
    assert not cfg.use_cpu


@pytest.mark.parametrize("model_type", ["git", "flamingo"])
def test_the_2024_baselines_recipe(model_type):
    cfg = parse_config(["--config", str(CONFIGS / f"baseline2024_{model_type}.yaml")])
    m, t, loss = cfg.model, cfg.train, cfg.loss
    assert (cfg.model_type, m.hidden_size, m.num_layers, m.num_heads, cfg.data.vocab_size) == \
        (model_type, 768, 12, 12, 32768)
    assert (t.learning_rate, t.weight_decay, t.warmup_steps, t.batch_size, t.text_batch_size) == \
        (1e-4, 0.1, 5000, 128, 128)
    assert (loss.caption_weight, loss.text_weight, loss.clip_weight, loss.uniform_weight, loss.align_weight) == \
        (1.0, 0.25, 0.0, 0.0, 0.0)
    assert m.vision_encoder == "features"
    assert (cfg.data.block_size, cfg.data.max_caption_tokens) == (128, 128)  # 128-token chunks, captions <= 128
    flags = parse_config(["--config", str(CONFIGS / f"baseline2024_{model_type}.yaml"), "--learning_rate", "3e-4"])
    assert flags.train.learning_rate == 3e-4  # a flag overrides the file


def test_launcher_mixed_precision_is_not_silently_overridden(tiny_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    rc = train.main(["--data_dir", str(tiny_world), "--output_dir", str(tmp_path / "run"), "--preset", "tiny"])
    assert rc == 2
    assert "pass --mixed_precision bf16" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
