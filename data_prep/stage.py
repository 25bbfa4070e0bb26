"""What every data-prep stage shares: atomic outputs, manifests, up-to-date checks.

A stage writes into a temporary sibling directory and renames it into place only when it
has finished, so a failed or killed stage leaves nothing half-written. Its manifest records
the fingerprint of its inputs and parameters; a rerun with the same fingerprint is a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from babymm.files import DataError, remove_stale_siblings, write_json_atomic

MANIFEST = "manifest.json"


def prepared_dir(data_dir: Path, subset: str | None = None) -> Path:
    """Where the stages of one view of the data write: `DATA/prepared` for the data as it is,
    `DATA/prepared/subsets/NAME` for a budgeted subsample (see data_prep.budget), so runs at
    several budgets and seeds coexist and none reads another's tokenizer or curriculum."""
    root = Path(data_dir) / "prepared"
    return root if subset is None else root / "subsets" / subset


def fingerprint(*parts: Any) -> str:
    """A stable short hash of JSON-serialisable parts (parameters, upstream fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_fingerprint(paths: list[Path]) -> str:
    """Hash of file names, sizes and modification times: cheap, and changes when data does."""
    h = hashlib.sha256()
    for p in sorted(paths):
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def is_up_to_date(out_dir: Path, fp: str) -> bool:
    """Whether `out_dir` was made from inputs with fingerprint `fp`. Every stage asks this
    first, so it is also where the temp dirs of its killed runs are removed (see atomic_dir):
    a run killed after its output was in place, or while redoing an up-to-date output, would
    otherwise leave them until the output is next rewritten."""
    remove_stale_siblings(Path(out_dir))
    m = read_manifest(out_dir)
    return m is not None and m.get("fingerprint") == fp


def write_manifest(out_dir: Path, stage: str, fp: str, **info: Any) -> dict[str, Any]:
    manifest = {"stage": stage, "fingerprint": fp, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    write_json_atomic(Path(out_dir) / MANIFEST, manifest)
    return manifest


def log(stage: str, msg: str) -> None:
    print(f"[{stage}] {msg}", flush=True)


def stage_parser(doc: str) -> argparse.ArgumentParser:
    """The flags every stage takes: where the data is, and whether to redo finished work."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--data_dir", type=Path, required=True, help="BabyLM-format data directory")
    p.add_argument("--overwrite", action="store_true", help="redo the stage even if it is up to date")
    p.add_argument("--subset", default=None,
                   help="a budgeted subsample made by data_prep.budget (its name, e.g. budget-10000000w-text0.5-seed0); "
                        "default: the data as it is")
    return p


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None,
            run: Callable[[argparse.Namespace], Any]) -> int:
    """Every stage's CLI shell: parse, run, and turn bad data into one line on stderr and exit 2."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
