"""scripts/sweep.py: the grid it expands, the config errors it gives, and a 2-run toy sweep
(git and text on the tiny world) trained, skipped when run again, and tabulated."""

import json

import pandas as pd
import pytest
import yaml

from tests.conftest import TINY_MODEL, TINY_TRAIN, load_script

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


sweep = load_script("scripts/sweep.py", "sweep_script")


def tiny_flags(**changes):
    """conftest's tiny model and training flags as a train_flags mapping, with fewer steps."""
    flags = dict(zip(TINY_MODEL[::2], TINY_MODEL[1::2], strict=True))
    flags.update(zip(TINY_TRAIN[::2], TINY_TRAIN[1::2], strict=True))
    flags = {k.removeprefix("--"): yaml.safe_load(v) for k, v in flags.items()}
    flags.update({"text_pretrain_steps": 4, "multimodal_steps": 4, "logging_steps": 2, "warmup_steps": 1, **changes})
    return flags


def write_config(path, data_dir, **axes):
    cfg = {"model_type": ["git", "text"], "curriculum": ["length"], "text_pretrain": [True], "loss": ["cua"],
           "word_budget": [None], "seed": [0], "data_dir": str(data_dir),
           "train_flags": tiny_flags(run_eval=True), "launch": {"num_processes": 1}}
    cfg.update(axes)
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------- grid, dry run


def test_dry_run_lists_grid_with_text_once_per_condition(tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git", "flamingo", "coca", "text"],
                       curriculum=["length", "random"], loss=["cua", "clip"], seed=[0, 1, 2])
    out = tmp_path / "out"
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--dry_run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = [ln.split("]", 1)[1].split(":", 1)[0].strip() for ln in lines if ln.startswith("[")]
    # 4 x 2 x 1 x 2 x 1 x 3 = 48, but text has no contrastive loss: 2 x 3 text runs, not 12
    assert len(runs) == 3 * 2 * 2 * 3 + 2 * 3 == 42
    assert len(set(runs)) == 42
    assert lines[-1].startswith("dry run: 42 runs in the grid; 0 done, 42 to run")
    text = [r for r in runs if r.startswith("text-")]
    assert sorted(text) == sorted(f"text-{c}-pre-none-s{s}" for c in ("length", "random") for s in (0, 1, 2))
    assert {r.split("-")[3] for r in runs if not r.startswith("text-")} == {"cua", "clip"}
    assert "git-random-pre-clip-s2" in runs
    # each loss is train.py's recipe by name; text gets no loss flag at all
    cmd = {r: ln for r, ln in zip(runs, [ln for ln in lines if ln.startswith("    train.py")], strict=True)}
    assert "--loss clip " in cmd["coca-length-pre-clip-s0"] and "--loss cua " in cmd["coca-length-pre-cua-s0"]
    assert "--uniform_weight" not in cmd["coca-length-pre-cua-s0"]
    assert "--loss" not in cmd["text-length-pre-none-s0"] and "--eval_steps" not in cmd["text-length-pre-none-s0"]
    assert not out.exists()  # nothing ran


def test_seeds_flag_pretrain_axis_and_budget_worlds(tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git"], text_pretrain=[True, False],
                       word_budget=[None, 30000])
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--dry_run", "--seeds", "4", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    cmds = {ln.split("]", 1)[1].split(":", 1)[0].strip(): nxt for ln, nxt in zip(lines, lines[1:], strict=False) if ln.startswith("[")}
    assert len(cmds) == 2 * 2 * 2
    budget_run = cmds["git-length-nopre_matched-cua-b30000-s5"]
    assert f"--data_dir {tiny_world}-30000w --word_budget 30000" in budget_run
    assert "--text_pretrain_steps 0" in budget_run
    as_is = cmds["git-length-pre-cua-s4"]
    assert f"--data_dir {tiny_world} " in as_is and "--word_budget" not in as_is
    assert "--text_pretrain_steps 4" in as_is and "--text_pretrain_steps 0" not in as_is


@pytest.fixture
def real_data(tmp_path):
    d = tmp_path / "real"  # a data dir that is not the built-in world: no world.json
    (d / "text").mkdir(parents=True)
    return d


BAD = [
    ({"models": ["git"]}, "models"),
    ({"model_type": ["git", "vit"]}, "model_type"),
    ({"curriculum": ["length", "hardest_first"]}, "curriculum"),
    ({"seed": []}, "seed"),
    ({"loss": ["cuax"]}, "loss"),
    ({"text_pretrain": ["yes"]}, "text_pretrain"),
    ({"text_pretrain": [True, "sometimes"]}, "text_pretrain"),
    ({"text_pretrain": [False, "matched"]}, "text_pretrain"),  # the same condition twice
    ({"word_budget": [0]}, "word_budget"),
    ({"curriculum": "length"}, "curriculum"),
    ({"train_flags": tiny_flags(seed=3)}, "train_flags.seed"),
    ({"train_flags": tiny_flags(uniform_weight=0)}, "train_flags.uniform_weight"),
    ({"train_flags": tiny_flags(bogus_flag=1)}, "train_flags.bogus_flag"),
    ({"train_flags": tiny_flags(run_eval=False)}, "train_flags.run_eval"),
    ({"train_flags": tiny_flags(batch_size="many")}, "--batch_size"),
    ({"launch": {"num_procs": 2}}, "launch.num_procs"),
    ({"launch": {"mixed_precision": "fp8"}}, "launch.mixed_precision"),
]


@pytest.mark.parametrize(("change", "key"), BAD, ids=[k for _, k in BAD])
def test_config_errors_are_one_line_naming_the_key(change, key, tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "bad.yaml", tiny_world, **change)
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--dry_run"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and err.startswith("error: ") and key in err, err
    assert captured.out == ""


def test_budgets_on_real_data_are_drawn_from_it(real_data, tmp_path, capsys):
    """On real data a budget is a draw from the data_dir itself, passed on to train.py."""
    cfg = write_config(tmp_path / "ok.yaml", real_data, word_budget=[None, 1000])
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "--word_budget 1000" in out and f"--data_dir {real_data} --word_budget" in out
    assert f"{real_data.name}-1000w" not in out


def test_override_error_and_value(tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "grid.yaml", tiny_world)
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--dry_run", "launch.cores=3"]) == 2
    assert "launch.cores" in capsys.readouterr().err
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "o"), "--dry_run", "model_type=[text]",
                       "train_flags.multimodal_steps=7"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 1 runs" in out and "--multimodal_steps 7" in out


# ------------------------------------------------------------- text pretraining at equal words


def dry_run_commands(capsys, cfg, out, *extra):
    """{run name: (its status line, its train.py argv)} from --dry_run."""
    import shlex

    assert sweep.main(["--config", str(cfg), "--out", str(out), "--dry_run", *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {ln.split("]", 1)[1].split(":", 1)[0].strip(): (ln, shlex.split(nxt.removeprefix("    train.py ")))
            for ln, nxt in zip(lines, lines[1:], strict=False) if ln.startswith("[")}


def text_blocks(argv):
    """Text blocks a train.py command trains on, from train.py's own parse of it: stage 1 takes
    text_batch_size blocks a step for text_pretrain_steps, stage 2 as many for multimodal_steps."""
    from babymm.config import parse_config

    t = parse_config(argv).train
    return t.text_pretrain_steps * t.text_batch_size + t.multimodal_steps * t.text_batch_size


@pytest.mark.parametrize(("pretrain", "multimodal", "batch", "processes", "stage2"),
                         [(4, 4, 8, 1, 16),  # B + P*B/M = 8 + 8: exact
                          (4, 6, 4, 1, 7),  # 4 + 16/6 = 6.67: 7, 2 blocks over
                          (5, 4, 4, 2, 10)])  # 4 + 20/4 = 9, a multiple of 2 processes: 10, 4 blocks over
def test_matched_no_pretraining_trains_on_the_pretraining_runs_text(tiny_world, tmp_path, capsys, pretrain,
                                                                    multimodal, batch, processes, stage2):
    from babymm.config import parse_config

    flags = tiny_flags(text_pretrain_steps=pretrain, multimodal_steps=multimodal, text_batch_size=batch)
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git", "text"], train_flags=flags,
                       text_pretrain=[True, "matched", "unmatched"], launch={"num_processes": processes})
    cmds = dry_run_commands(capsys, cfg, tmp_path / "out")
    assert len(cmds) == 6
    for mt, loss in (("git", "cua"), ("text", "none")):
        pre = cmds[f"{mt}-length-pre-{loss}-s0"][1]
        line, matched = cmds[f"{mt}-length-nopre_matched-{loss}-s0"]
        # by hand: the pretraining run trains on (P + M) * B blocks; the matched one on M * B', no stage 1
        assert text_blocks(pre) == (pretrain + multimodal) * batch
        assert text_blocks(matched) == multimodal * stage2
        residual = multimodal * stage2 - (pretrain + multimodal) * batch
        assert abs(residual) <= multimodal * processes / 2  # the nearest the batch can come
        assert "no stage 1, its text mixed into stage 2" in line
        block = parse_config(pre).data.block_size
        assert (f"{abs(residual)} more than pre ({abs(residual) * block} tokens, from rounding)" if residual
                else "as many as pre") in line
        # unmatched: the command a no-pretraining run got before matched existed
        line, unmatched = cmds[f"{mt}-length-nopre_unmatched-{loss}-s0"]
        i = pre.index("--data_dir") + 2
        old = [*pre[:i], "--text_pretrain_steps", "0", *pre[i:]]
        old[old.index("--output_dir") + 1] = unmatched[unmatched.index("--output_dir") + 1]
        assert unmatched == old
        assert text_blocks(unmatched) == multimodal * batch
        assert f"{pretrain * batch} fewer than pre" in line and f"{pretrain} fewer optimizer steps" in line


def test_false_means_matched(tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git"], text_pretrain=[False])
    cmds = dry_run_commands(capsys, cfg, tmp_path / "out")
    assert list(cmds) == ["git-length-nopre_matched-cua-s0"]
    assert text_blocks(cmds["git-length-nopre_matched-cua-s0"][1]) == (4 + 4) * 8  # tiny_flags: P = M = 4, B = 8


def test_a_curriculum_that_sets_stage_2_by_epochs_cannot_be_matched(tiny_world, tmp_path, capsys):
    flags = tiny_flags()
    del flags["multimodal_steps"]  # nouns_stages sets it from the data
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git"], curriculum=["nouns_stages"],
                       text_pretrain=[True, "matched"], train_flags=flags)
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--dry_run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "text_pretrain: matched" in err and "epochs_per_stage" in err
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--dry_run",
                       "text_pretrain=[true, unmatched]"]) == 0


def fake_finished_run(run_dir, argv, blimp, words):
    """A run directory as train.py and eval.run leave it, without training: run_config.json from
    train.py's parse of `argv`, a results.json and a metrics.jsonl."""
    from babymm.config import parse_config

    run_dir.mkdir(parents=True)
    (run_dir / "run_config.json").write_text(json.dumps(parse_config(argv).to_dict()))
    (run_dir / "results.json").write_text(json.dumps({"summary": {"BLiMP": blimp, "EWoK": 0.5}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 8, "train/words_seen": words}) + "\n")


def test_tables_name_the_pretraining_comparison(tiny_world, tmp_path, capsys):
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git"],
                       text_pretrain=[True, "matched", "unmatched"])
    out = tmp_path / "out"
    cmds = dry_run_commands(capsys, cfg, out)
    for i, (name, (_, argv)) in enumerate(cmds.items()):
        fake_finished_run(out / name, argv, 0.6 + i / 100, 1000 + i)
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--collect_only"]) == 0
    runs = pd.read_csv(out / "runs.csv", index_col="run")
    assert list(runs["text_pretrain"]) == ["pre", "nopre_matched", "nopre_unmatched"]
    assert list(runs["text_blocks"]) == [(4 + 4) * 8, 4 * 16, 4 * 8]  # P = M = 4, B = 8; matched B' = 16
    assert list(runs["words_seen"]) == [1000, 1001, 1002]
    cond = pd.read_csv(out / "conditions.csv", index_col=0)
    assert list(cond.index) == ["text_pretrain=pre", "text_pretrain=nopre_matched", "text_pretrain=nopre_unmatched"]
    assert list(cond["text_blocks"]) == [64, 64, 32]
    md = (out / "conditions.md").read_text()
    assert "text_pretrain=nopre_matched" in md and "text_pretrain=nopre_unmatched" in md
    assert "nopre_matched = no stage 1, its text mixed into stage 2 (4 steps x 16 text blocks, raised from 8)" in md
    assert "nopre_unmatched = no stage 1 and nothing in its place" in md and "32 fewer than pre" in md
    machine = next(ln for ln in md.splitlines() if ln.startswith("Machine: "))
    assert "torch " in machine and "runs trained on: not recorded (no environment.json) (3 runs)" in machine


def test_a_no_pretraining_run_made_before_matched_is_not_reused_as_matched(tiny_world, tmp_path, capsys):
    """Before `matched`, text_pretrain: false made `<...>-nopre-<...>` with --text_pretrain_steps 0
    alone. Such a run is not in the grid under any name; put in the matched run's place it is stale
    (its text batch is not the matched one); in the unmatched run's place it is that run."""
    cfg = write_config(tmp_path / "grid.yaml", tiny_world, model_type=["git"], text_pretrain=[True, False])
    out = tmp_path / "out"
    cmds = dry_run_commands(capsys, cfg, out)
    pre = cmds["git-length-pre-cua-s0"][1]
    i = pre.index("--data_dir") + 2
    old_argv = [*pre[:i], "--text_pretrain_steps", "0", *pre[i:]]  # the old sweep's command
    fake_finished_run(out / "git-length-nopre-cua-s0", old_argv, 0.7, 900)
    fake_finished_run(out / "git-length-pre-cua-s0", pre, 0.6, 1000)

    cmds = dry_run_commands(capsys, cfg, out)
    assert "done, skipped" in cmds["git-length-pre-cua-s0"][0]
    assert "to run (new)" in cmds["git-length-nopre_matched-cua-s0"][0]
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--collect_only"]) == 0
    stdout = capsys.readouterr().out
    assert "1 run(s) in" in stdout and "named -nopre- (git-length-nopre-cua-s0)" in stdout and "not used" in stdout
    assert list(pd.read_csv(out / "runs.csv", index_col="run").index) == ["git-length-pre-cua-s0"]

    (out / "git-length-nopre-cua-s0").rename(out / "git-length-nopre_matched-cua-s0")
    cmds = dry_run_commands(capsys, cfg, out)
    assert "STALE (text_batch_size 8 (now 16))" in cmds["git-length-nopre_matched-cua-s0"][0]
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--collect_only"]) == 0
    assert list(pd.read_csv(out / "runs.csv", index_col="run").index) == ["git-length-pre-cua-s0"]
    capsys.readouterr()

    (out / "git-length-nopre_matched-cua-s0").rename(out / "git-length-nopre_unmatched-cua-s0")
    cmds = dry_run_commands(capsys, cfg, out, "text_pretrain=[true, unmatched]")
    assert "done, skipped" in cmds["git-length-nopre_unmatched-cua-s0"][0]


# ------------------------------------------------------------------------------- a real toy sweep


@pytest.fixture(scope="module")
def toy_sweep(tiny_world, tmp_path_factory):
    """Two runs (git, text) trained and scored through accelerate launch, and their stdout."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("sweep")
    cfg = write_config(root / "toy.yaml", tiny_world)
    out = root / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = sweep.main(["--config", str(cfg), "--out", str(out)])
    return cfg, out, rc, buf.getvalue()


def test_toy_sweep_trains_and_tabulates(toy_sweep):
    cfg, out, rc, stdout = toy_sweep
    assert rc == 0, stdout
    status = [ln for ln in stdout.splitlines() if ln.startswith("[")]
    assert len(status) == 2 and all(" ok in " in ln for ln in status), stdout
    names = ["git-length-pre-cua-s0", "text-length-pre-none-s0"]
    for n in names:
        assert (out / n / "results.json").exists()
        log = (out / n / "train.log").read_text()
        assert "babymm/train.py" in log.splitlines()[0] and "[train]" in log
        assert json.loads((out / n / "run_config.json").read_text())["model"]["model_type"] == n.split("-")[0]

    runs = pd.read_csv(out / "runs.csv", index_col="run")
    assert list(runs.index) == names  # the text run once, not once per loss value
    assert list(runs["model_type"]) == ["git", "text"]
    assert list(runs["loss"]) == ["cua", "none"]
    assert list(runs["seed"]) == [0, 0]
    assert runs["BLiMP"].between(0, 1).all()
    assert pd.isna(runs.loc["text-length-pre-none-s0", "R@1 i->t"])  # text has no image embeddings
    assert 0 <= runs.loc["git-length-pre-cua-s0", "R@1 i->t"] <= 1

    cond = pd.read_csv(out / "conditions.csv", index_col=0)
    assert len(cond) == 2
    assert sorted(cond["model_type"]) == ["git", "text"]
    assert list(cond["seeds"]) == [1, 1]
    assert list(cond["loss"]) == ["cua", "none"]
    assert cond["BLiMP sd"].isna().all()  # one seed: no spread
    assert cond["BLiMP mean"].tolist() == pytest.approx(runs["BLiMP"].tolist())
    md = (out / "conditions.md").read_text()
    assert "n seeds" in md and "model_type=git, loss=cua" in md and "model_type=text, loss=none" in md
    assert (out / "by_model_type.png").read_bytes().startswith(PNG_MAGIC)
    assert not (out / "by_word_budget.png").exists()  # one budget
    assert not list(out.glob(".*.tmp"))


def test_toy_sweep_second_run_skips_and_collect_only(toy_sweep, capsys):
    cfg, out, _, _ = toy_sweep
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")}
    assert len(before) == 2
    (out / "runs.csv").unlink()
    assert sweep.main(["--config", str(cfg), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    status = [ln for ln in stdout.splitlines() if ln.startswith("[")]
    assert len(status) == 2 and all("skipped (results.json exists)" in ln for ln in status), stdout
    assert "0 trained, 2 skipped, 0 failed" in stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/results.json")} == before
    assert len(pd.read_csv(out / "runs.csv")) == 2  # collected again

    # changed settings: the finished runs are stale, not silently reused
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--dry_run", "train_flags.multimodal_steps=5"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.count("STALE (multimodal_steps 4 (now 5))") == 2, stdout
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--collect_only",
                       "train_flags.multimodal_steps=5"]) == 0
    assert "2 run(s) of the grid not collected" in capsys.readouterr().out


def test_a_killed_run_of_the_same_settings_is_resumed_not_retrained(toy_sweep, capsys):
    cfg, out, _, _ = toy_sweep
    run = out / "git-length-pre-cua-s0"
    for f in ("results.json", "model.safetensors"):  # as if killed before the end
        (run / f).unlink()
    metrics = (run / "metrics.jsonl").read_text()
    assert sweep.main(["--config", str(cfg), "--out", str(out), "--dry_run"]) == 0
    assert "partial run, resumed from its newest checkpoint" in capsys.readouterr().out
    assert sweep.main(["--config", str(cfg), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "1 trained, 1 skipped, 0 failed" in stdout, stdout
    commands = [ln for ln in (run / "train.log").read_text().splitlines() if ln.startswith("$ ")]
    assert len(commands) == 2 and "--overwrite_output_dir true" in commands[0]  # the log is appended to
    assert "--resume_from_checkpoint auto" in commands[1] and "--overwrite_output_dir" not in commands[1]
    assert (run / "resumed.jsonl").exists() and (run / "metrics.jsonl").read_text() == metrics
    # a partial run made with other settings is retrained from scratch
    state, why = sweep.run_state(run, {"train": {"multimodal_steps": 99}})
    (run / "results.json").unlink()
    assert sweep.run_state(run, {"train": {"multimodal_steps": 99}}) == ("todo", sweep.RETRAIN)
    assert state == "stale"


def test_failed_run_is_reported_and_sweep_goes_on(tiny_world, tmp_path, capsys):
    # vision_encoder "features" on a pixel world: train.py refuses after data prep (the launcher exits 1)
    cfg = write_config(tmp_path / "fail.yaml", tiny_world, model_type=["git"],
                       train_flags=tiny_flags(vision_encoder="features"))
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    line = next(ln for ln in captured.out.splitlines() if ln.startswith("[1/1]"))
    assert "FAILED (exit 1)" in line and "error: data in" in line and "--vision_encoder is 'features'" in line
    assert "train.log" in line and (tmp_path / "out" / "git-length-pre-cua-s0" / "train.log").exists()
    assert "1 run(s) failed" in captured.err


def test_a_field_added_since_a_run_was_made_is_no_difference_at_its_default():
    from babymm.config import parse_config

    expected = json.loads(json.dumps(parse_config(["--model_type", "git"]).to_dict()))
    old = json.loads(json.dumps(expected))
    del old["data"]["text_fraction"], old["model"]["vision_pooling"]  # made before these existed
    assert sweep.config_differences(old, expected) == []
    expected["data"]["text_fraction"] = 0.3  # asked for something other than what the run did
    assert sweep.config_differences(old, expected) == ["text_fraction None (now 0.3)"]
