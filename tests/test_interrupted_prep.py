"""A data-prep stage SIGKILLed half-way through writing leaves nothing that a rerun trips on.

Each stage writes into `.NAME.tmp-PID-XXXX` beside its output and renames it into place when
done (babymm.files.atomic_dir). A SIGKILL gives no chance to clean up, so the next writer of
the same output removes the temp dirs of processes that no longer exist. Here the pipeline runs
in a subprocess that kills itself with a real SIGKILL (no handlers, no `finally`) in the middle
of a stage, after part of that stage's files are written; then the pipeline is rerun and must
finish with exactly the outputs of an uninterrupted run and no leftovers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from babymm.files import atomic_dir, write_text_atomic
from data_prep import build_curriculum, pipeline

ROOT = Path(__file__).resolve().parent.parent
LEFTOVER = re.compile(r"^\..+\.(tmp|old)-")

# Runs in the subprocess: `python -c DRIVER MODE ARGS...`. Wraps one function that a stage calls
# while writing its temp dir so that it writes part of its output and then SIGKILLs the process.
DRIVER = r"""
import os, signal, sys
mode, argv = sys.argv[1], sys.argv[2:]

def die():
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if mode == "ingest":  # text saved whole, then captions half-saved
    import datasets
    real_save_to_disk = datasets.Dataset.save_to_disk
    def save_to_disk(self, path, *args, **kwargs):
        if os.path.basename(str(path)) == "captions":
            real_save_to_disk(self.select(range(self.num_rows // 2)), path, *args, **kwargs)
            die()
        return real_save_to_disk(self, path, *args, **kwargs)
    datasets.Dataset.save_to_disk = save_to_disk
elif mode in ("text.npy", "order.npy"):  # that array written half-way, no manifest
    import numpy as np
    real_save = np.save
    def save(file, arr, *args, **kwargs):
        if os.path.basename(str(file)) == mode:
            real_save(file, arr[: len(arr) // 2], *args, **kwargs)
            die()
        return real_save(file, arr, *args, **kwargs)
    np.save = save
elif mode in ("old", "swapped"):  # replacing a finished output: after moving it aside to
    real_replace = os.replace      # .NAME.old-PID (old), or after moving the new one in (swapped)
    def replace(src, dst, **kwargs):
        real_replace(src, dst, **kwargs)
        src, dst = os.path.basename(str(src)), os.path.basename(str(dst))
        if (mode == "old" and ".old-" in dst) or (mode == "swapped" and ".tmp-" in src and dst == "length-seed0"):
            die()
    os.replace = replace

if mode in ("old", "swapped"):
    from data_prep.build_curriculum import main
else:
    from data_prep.pipeline import main
sys.exit(main(argv))
"""


def copy_world(src: Path, dst: Path) -> Path:
    """The generated world without anything prepared from it (other tests prepare tiny_world)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("prepared", ".*"))
    return dst


def prepare(data_dir: Path) -> None:
    assert pipeline.main(["--data_dir", str(data_dir), "--curriculum", "length"]) == 0


def killed_run(mode: str, *argv: str) -> int:
    """Run DRIVER in a subprocess that must die of SIGKILL; returns its (now dead) pid."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, mode, *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"expected death by SIGKILL, got rc {proc.returncode}:\n{out}"
    return proc.pid


def leftovers(data_dir: Path) -> list[Path]:
    return [p for p in data_dir.parent.rglob(".*") if LEFTOVER.match(p.name)]


def assert_same_outputs(data_dir: Path, reference: Path) -> None:
    """Every stage's output equals the uninterrupted run's, and every manifest is whole JSON."""
    ours, ref = data_dir / "prepared", reference / "prepared"
    for part in ("text", "captions"):
        a = datasets.load_from_disk(str(ours / "ingest" / part))
        b = datasets.load_from_disk(str(ref / "ingest" / part))
        assert a.num_rows == b.num_rows and a.column_names == b.column_names, part
        assert a.data.table.equals(b.data.table), f"ingest/{part}: rows differ from the uninterrupted run"
    for rel in ("tokens/text.npy", "scores/length/scores.npy", "curricula/length-seed0/order.npy"):
        a, b = np.load(ours / rel), np.load(ref / rel)
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), rel
    assert (ours / "tokenizer" / "tokenizer.json").read_bytes() == (ref / "tokenizer" / "tokenizer.json").read_bytes()
    volatile = {"created", "fingerprint", "data_dir", "text_files", "caption_files", "data_fingerprint"}
    manifests = sorted(p.relative_to(ours) for p in ours.rglob("manifest.json"))
    assert manifests == sorted(p.relative_to(ref) for p in ref.rglob("manifest.json"))
    assert len(manifests) == 6  # ingest, words, tokenizer, tokens, scores/length, curricula/length-seed0
    for rel in manifests:
        a, b = json.loads((ours / rel).read_text()), json.loads((ref / rel).read_text())
        assert a["stage"] == b["stage"] and len(a["fingerprint"]) == 16
        assert {k: v for k, v in a.items() if k not in volatile} == {k: v for k, v in b.items() if k not in volatile}, rel


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    """The same world prepared without interruption."""
    d = copy_world(tiny_world, tmp_path_factory.mktemp("uninterrupted") / "world")
    prepare(d)
    assert not leftovers(d)
    return d


@pytest.mark.parametrize("mode, stage, partial, done_before", [
    ("ingest", "ingest", "text", []),                                    # in save_to_disk
    ("text.npy", "tokens", "text.npy", ["ingest", "words", "tokenizer"]),  # in np.save
    ("order.npy", "curricula/length-seed0", "order.npy", ["tokens", "scores/length"]),
])
def test_rerun_after_sigkill_mid_stage(tiny_world, reference, tmp_path, mode, stage, partial, done_before):
    d = copy_world(tiny_world, tmp_path / "world")
    pid = killed_run(mode, "--data_dir", str(d), "--curriculum", "length")
    prepared, out = d / "prepared", d / "prepared" / stage
    # what the kill left: the stages before are whole, this one's output is not there at all
    # (no half-written dir a reader could take for real), and its partial temp dir is
    for before in done_before:
        assert json.loads((prepared / before / "manifest.json").read_text())["stage"]
    assert not out.exists(), f"{out} exists after the stage was killed before finishing"
    stale = list(out.parent.glob(f".{out.name}.tmp-{pid}-*"))
    assert len(stale) == 1 and (stale[0] / partial).exists() and not (stale[0] / "manifest.json").exists()
    assert leftovers(d) == stale

    prepare(d)
    assert not leftovers(d), leftovers(d)
    assert_same_outputs(d, reference)


def test_rerun_after_sigkill_while_replacing_output(tiny_world, reference, tmp_path):
    """Redoing a finished stage (--overwrite), killed while swapping the new output in."""
    d = copy_world(tiny_world, tmp_path / "world")
    prepare(d)
    out = d / "prepared" / "curricula" / "length-seed0"
    argv = ["--data_dir", str(d), "--curriculum", "length", "--overwrite"]

    # after the new output is in place, before the old one (moved to .NAME.old-PID) is removed:
    # the output is whole and up to date, so the rerun does no work but must still clean up
    pid = killed_run("swapped", *argv)
    assert json.loads((out / "manifest.json").read_text())["stage"] == "curricula"
    assert leftovers(d) == [out.parent / f".length-seed0.old-{pid}"]
    mtime = (out / "manifest.json").stat().st_mtime_ns
    assert build_curriculum.build_curriculum(d, "length") == out
    assert (out / "manifest.json").stat().st_mtime_ns == mtime and not leftovers(d)

    # between moving the old output aside and moving the new one in: the output is missing,
    # and the rerun rebuilds it
    pid = killed_run("old", *argv)
    assert not out.exists() and (out.parent / f".length-seed0.old-{pid}" / "order.npy").exists()
    assert len(list(out.parent.glob(f".length-seed0.tmp-{pid}-*"))) == 1 and len(leftovers(d)) == 2
    prepare(d)
    assert not leftovers(d), leftovers(d)
    assert_same_outputs(d, reference)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    return proc.pid


def test_atomic_dir_spares_live_processes_temp_dirs(tmp_path):
    dead, me, parent = dead_pid(), os.getpid(), os.getppid()
    out = tmp_path / "stage"
    keep = [tmp_path / f".stage.tmp-{me}-inflight", tmp_path / f".stage.tmp-{parent}-abc",
            tmp_path / f".stage.old-{parent}",
            tmp_path / f".stage2.tmp-{dead}-abc",  # another output's
            tmp_path / ".stage.tmp-k3j2h1xz"]  # no pid in the name: cannot tell, leave it
    gone = [tmp_path / f".stage.tmp-{dead}-abc", tmp_path / f".stage.old-{dead}"]
    for p in keep + gone:
        p.mkdir()
        (p / "part.npy").write_bytes(b"half")
    (tmp_path / f".stage.tmp-{dead}-file").write_text("a stale temp file")
    gone.append(tmp_path / f".stage.tmp-{dead}-file")

    with atomic_dir(out) as tmp:
        assert tmp.name.startswith(f".stage.tmp-{me}-")
        (tmp / "a").write_text("1")
        with atomic_dir(out) as inner:  # a second writer in this (live) process: spares `tmp`
            (inner / "a").write_text("0")
        assert tmp.exists() and (out / "a").read_text() == "0"
    assert (out / "a").read_text() == "1"
    assert all(p.exists() for p in keep), [p for p in keep if not p.exists()]
    assert not any(p.exists() for p in gone), [p for p in gone if p.exists()]

    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:  # a failure still cleans up
        (tmp / "a").write_text("2")
        raise RuntimeError
    assert not tmp.exists() and (out / "a").read_text() == "1"


def test_write_text_atomic_removes_dead_writers_temp_files(tmp_path):
    dead, parent = dead_pid(), os.getppid()
    stale, live = tmp_path / f".r.json.tmp-{dead}-x1.tmp", tmp_path / f".r.json.tmp-{parent}-x2.tmp"
    stale.write_text("{")
    live.write_text("{")
    write_text_atomic(tmp_path / "r.json", "{}\n")
    assert (tmp_path / "r.json").read_text() == "{}\n"
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r.json", live.name])
