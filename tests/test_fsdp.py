"""FSDP2 (accelerate's `fsdp_version: 2`, torch's `fully_shard`) with two gloo processes trains
what one process trains on the same global batch, as DDP does (tests/test_distributed.py).

accelerate (1.16) turns FSDP on only for accelerator devices: with `ACCELERATE_USE_FSDP=true`
(what `accelerate launch --config_file configs/accelerate/fsdp.yaml` sets) CPU processes stay
MULTI_CPU, that is plain DDP, without a word (and `--cpu` starts one process). So this file,
run under torchrun, moves accelerate's state to FSDP once it is built (`_main` below) and then
runs babymm's own `train.main`: the rest is accelerate's FSDP2 path as on a GPU (`fully_shard`,
sharded DTensor parameters and gradients, the optimizer re-pointed at the shards, the DTensor
gradient clip, the gathered state dict, sharded `save_state`) on gloo's all-gather and
reduce-scatter. A run on GPUs still has to check speed and memory; this checks babymm's side.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
            "FSDP_RESHARD_AFTER_FORWARD": "true", "OMP_NUM_THREADS": "1"}
FORCED = "accelerate chose MULTI_CPU for these CPU processes; forced to FSDP"
LOSS_TERMS = ("train/caption_loss", "train/text_loss", "train/clip_loss", "train/uniform_loss", "train/align_loss",
              "train/loss")

PROBE = """
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
m = fully_shard(torch.nn.Linear(4, 2))
m(torch.ones(3, 4)).sum().backward()
assert type(m.weight.grad).__name__ == "DTensor"
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def fsdp2_on_gloo():
    """Skip only when this torch build cannot run FSDP2 on gloo at all (no torch.distributed, no
    gloo, no fully_shard): one sharded forward and backward, in a process of its own."""
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"this torch build cannot run FSDP2 on gloo: {proc.stderr.strip().splitlines()[-1:]}")


def _metrics(run: Path, kind: str = "train/stage") -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if any(k.startswith(kind) for k in r)]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


CASES = {
    # stage 2 from step 1: captions, text batch, every contrastive term (gathered with gradient);
    # the gap probe (before the first step and after the last) and a word milestone at step 1
    "git": ["--text_pretrain_steps", "0", "--multimodal_steps", "2", "--eval_steps", "2",
            "--word_milestones", "300"],
    # stage 1 (the text LM) then stage 2, through one FSDP root
    "text": ["--model_type", "text", "--text_pretrain_steps", "1", "--multimodal_steps", "1", "--eval_steps", "0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_fsdp2_two_processes_match_one(case, fsdp2_on_gloo, tiny_world, tmp_path):
    from babymm import train
    from babymm.checkpoint import latest_checkpoint
    from tests.conftest import TINY_MODEL

    args = ["--data_dir", str(tiny_world), "--curriculum", "length", *TINY_MODEL, *CASES[case], "--batch_size", "16",
            "--text_batch_size", "8", "--logging_steps", "1", "--warmup_steps", "1", "--run_eval", "false"]
    assert train.main(["--output_dir", str(tmp_path / "one"), *args]) == 0
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", __file__,
                           "--output_dir", str(tmp_path / "two"), *args], env={**os.environ, **FSDP_ENV},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert FORCED in proc.stdout and "2 process(es)" in proc.stdout
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [m["step"] for m in two] == [m["step"] for m in one] and one[0]["step"] == 1
    for a, b in zip(one, two, strict=True):
        assert b["train/words_seen"] == a["train/words_seen"]  # the same global batches
        # the log rounds to 5 decimals: 1e-6 relative, or one unit of that rounding
        for k in LOSS_TERMS:
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-6, abs=1e-5), (a["step"], k)
    import torch

    exports = [Path("model.safetensors")] + ([Path("milestones/chck_300/model.safetensors")] if case == "git" else [])
    for rel in exports:  # written from the gathered weights, with the shapes one process writes
        w1, w2 = _weights(tmp_path / "one" / rel), _weights(tmp_path / "two" / rel)
        assert w1.keys() == w2.keys() and all(w1[k].shape == w2[k].shape for k in w1), rel
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=f"{rel}: {k}")
    if case == "git":  # the probe ran on every process (it gathers the weights), logged once
        gap1, gap2 = _metrics(tmp_path / "one", "eval/gap/"), _metrics(tmp_path / "two", "eval/gap/")
        assert [m["step"] for m in gap2] == [m["step"] for m in gap1] == [0, 2]
        for a, b in zip(gap1, gap2, strict=True):
            assert b["eval/gap/centroid_distance"] == pytest.approx(a["eval/gap/centroid_distance"], abs=1e-4)
    # the last checkpoint, sharded (pytorch_model_fsdp_0/), is one that a resume finds
    ckpt = latest_checkpoint(tmp_path / "two")
    assert ckpt is not None and ckpt.name == f"step-{two[-1]['step']:08d}"
    assert (ckpt / "pytorch_model_fsdp_0" / ".metadata").is_file()


def _main(argv: list[str]) -> int:
    """Under torchrun: babymm's train.main, with accelerate's state moved from MULTI_CPU to FSDP."""
    sys.path.insert(0, str(ROOT))
    from accelerate import state
    from accelerate.utils import DistributedType

    built = state.AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        built(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self.process_index == 0:
                print(FORCED, flush=True)
            self.distributed_type = state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    state.AcceleratorState.__init__ = init
    from babymm import train

    return train.main(argv)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
