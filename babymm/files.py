"""Reading and writing files the way every part of babymm must: atomically, and with errors
that name the file and record.

Shared by data prep, training and eval, so that a killed process never leaves a half-written
result behind and a bad line is reported the same way wherever it is read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


class DataError(ValueError):
    """Bad input data. The message is one line naming the file, the line or record, and the fix."""


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file beside `path`, then rename: readers see the old or the new file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists here. Unsure (e.g. another user's process) counts as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but is not ours; anything else: be conservative
        return True
    return True


def remove_stale_siblings(path: Path) -> list[Path]:
    """Remove the leftovers of writers of `path` that were killed (SIGKILL, OOM, power loss)
    before they could clean up: temp siblings `.NAME.tmp-PID-*` and `.NAME.old-PID` whose
    process PID no longer exists. A live process's temp files, this one's included, are never
    touched. Returns what was removed."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:tmp-(\d+)-.+|old-(\d+))")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except FileNotFoundError:
        return removed
    for sibling in siblings:
        m = pattern.fullmatch(sibling.name)
        if not m or _pid_alive(int(m.group(1) or m.group(2))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temp file beside `path` (`.NAME.tmp-PID-XXXX.tmp`), then rename. Temp
    files of killed writers of the same path are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a temp directory `.NAME.tmp-PID-XXXX` beside `out_dir` that replaces `out_dir` only
    if the block succeeds; on an exception it is removed. A SIGKILLed process cannot clean up,
    so the temp and `.NAME.old-PID` siblings of dead processes are removed before starting."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out_dir)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-{os.getpid()}-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out_dir.exists():
        # killed between these two renames, out_dir is missing (a rerun rebuilds it) and the
        # old copy is left as .NAME.old-PID, which the next atomic_dir(out_dir) removes
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if old.exists():  # this process's own leftover: rmtree below failed earlier
            shutil.rmtree(old)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


BOM = b"\xef\xbb\xbf"


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes) of each line, without its `\\n` or `\\r\\n` and without a
    leading UTF-8 byte-order mark; read a line at a time, so any file size will do. Decode each
    line with `decode_line`, so that bad bytes are reported at their line."""
    with Path(path).open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            yield lineno, raw.removesuffix(b"\n").removesuffix(b"\r")


def _utf8_problem(data: bytes, err: UnicodeDecodeError, column: int) -> str:
    return (f"not valid UTF-8 (byte 0x{data[err.start]:02x} at column {column}); "
            "save the file as UTF-8")


def decode_line(raw: bytes, where: str) -> str:
    """One line as text; bytes that are not UTF-8 raise DataError naming `where` (file:line)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: {_utf8_problem(raw, e, e.start + 1)}") from None


def json_problem(e: json.JSONDecodeError) -> str:
    """What json says is wrong, and where on the line: 'Expecting value at column 12'."""
    return f"{e.msg.removesuffix(' at')} at column {e.colno}"


def read_json(path: Path) -> Any:
    """A whole JSON file. An empty file, bytes that are not UTF-8, or malformed or truncated
    JSON raise DataError naming `path:line`."""
    path = Path(path)
    data = path.read_bytes().removeprefix(BOM)
    if not data.strip():
        raise DataError(f"{path}: empty file ({len(data)} bytes); expected JSON: fill it or remove it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - data.rfind(b"\n", 0, e.start)
        raise DataError(f"{path}:{line}: {_utf8_problem(data, e, column)}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: malformed or truncated JSON ({json_problem(e)}); "
                        "fix or regenerate the file") from None


class BadRecord(DataError):
    """One bad line or record, with a short `reason` under which a skip is counted."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def parse_jsonl_line(raw: bytes, where: str) -> dict[str, Any] | None:
    """One jsonl line as its object, None for a blank line. Bytes that are not UTF-8, malformed
    JSON, or a value that is not an object raise BadRecord naming `where` (file:line)."""
    try:
        line = decode_line(raw, where)
    except DataError as e:
        raise BadRecord(str(e), "not valid UTF-8") from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord(f"{where}: malformed JSON ({json_problem(e)}); each line must be one object",
                        "malformed JSON") from None
    if not isinstance(record, dict):
        raise BadRecord(f"{where}: expected a JSON object, got {type(record).__name__}; "
                        "each line must be one object", "not a JSON object")
    return record


def read_jsonl_lines(path: Path, required: tuple[str, ...] = ()) -> list[tuple[int, dict[str, Any]]]:
    """(line number, record) of each record of a jsonl file (blank lines skipped). Bytes that
    are not UTF-8, a malformed line, a line that is not an object, or a `required` field
    missing or empty raise DataError naming `path:line`."""
    path = Path(path)
    records = []
    for lineno, raw in iter_lines(path):
        where = f"{path}:{lineno}"
        record = parse_jsonl_line(raw, where)
        if record is None:
            continue
        missing = [f for f in required if not isinstance(record.get(f), str) or not record[f].strip()]
        if missing:
            raise DataError(f"{where}: missing or empty field(s) {missing}")
        records.append((lineno, record))
    return records


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Records of a jsonl file (blank lines skipped); errors as `read_jsonl_lines`."""
    return [record for _, record in read_jsonl_lines(path, required)]


def lexical_path(path: str | Path, base: str | Path) -> Path:
    """`path` (absolute, or relative to `base`) made absolute with `..` removed by name: no
    symlink is followed, so a symlink inside a directory stays inside it."""
    return Path(os.path.normpath(os.path.join(os.path.abspath(base), path)))


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether `path` is `root` or under it, compared lexically (see `lexical_path`)."""
    root, path = os.path.normpath(os.path.abspath(root)), os.path.normpath(os.path.abspath(path))
    return os.path.commonpath([root, path]) == root


def load_npy(path: Path) -> np.ndarray:
    """A .npy file memory-mapped (never read whole); an empty, truncated or non-.npy file raises
    DataError naming it."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes): truncated or not a .npy file; regenerate it")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        problem = " ".join(str(e).split())
        raise DataError(f"{path}: truncated or not a .npy file ({problem}); regenerate it") from None
