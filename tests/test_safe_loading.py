"""Nothing in the repository loads data in a way that can run code, and weights are safetensors.

Every tracked (or new, unignored) Python file is parsed with `ast` and checked for:
  - `torch.load(...)` without `weights_only=True` (a pickle: loading it runs arbitrary code);
  - `torch.save(...)` anywhere: model weights are written as safetensors (`save_file`,
    `save_pretrained`), and `safe_serialization=False` is refused too;
  - `pickle` / `dill` / `joblib` loads, `np.load(..., allow_pickle=True)`, `pd.read_pickle`;
  - `yaml.load`, `yaml.unsafe_load`, `yaml.full_load`, `yaml.Loader`, ... (only the safe ones);
  - `trust_remote_code` set to anything but False, as a keyword, a dict key or in a string;
  - calls to the builtins `eval(` and `exec(` (not `model.eval()`, not `evaluate_run`).
A failure lists every offender as `file:line: what`. Names bound by `import x as y` and
`from x import y` are resolved, so `import torch as t; t.load(f)` is caught as well.
"""

from __future__ import annotations

import ast
import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()

# justified exceptions, "path:line" -> why; keep empty unless there is no safe alternative
ALLOWED: dict[str, str] = {}
# files that play the official BabyLM pipeline's part against an exported checkpoint: their
# `trust_remote_code=True` is the official loader's own call, run only in a child process where
# `import babymm` fails, on a checkpoint babymm itself wrote (babymm never loads with it)
OFFICIAL_SIDE: dict[str, str] = {
    "scripts/official_agreement.py": "runs the official pipeline's loaders beside babymm's eval",
    "tests/test_export.py": "loads the export as the official pipeline does, in a process without babymm",
}

YAML_SAFE = {"safe_load", "safe_load_all", "SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
PICKLE_LOADERS = {"load", "loads", "Unpickler", "open"}
TRUTHY_STRING = re.compile(r"trust_remote_code\s*[=:]\s*['\"]?(true|1|yes)", re.IGNORECASE)


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (False, None, 0)


def _is_true(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


class _Checker(ast.NodeVisitor):
    """Collects (line, rule, message) for one module."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> dotted name it was imported as
        self.found: list[tuple[int, str, str]] = []

    def flag(self, node: ast.AST, rule: str, msg: str) -> None:
        self.found.append((node.lineno, rule, msg))

    # names ---------------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                top = a.name.split(".")[0]
                self.aliases[top] = top
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for a in node.names:
            full = f"{node.module}.{a.name}" if node.module else a.name
            self.aliases[a.asname or a.name] = full
            self._check_name(node, full)
        self.generic_visit(node)

    def dotted(self, node: ast.AST) -> str | None:
        """`np.load` -> 'numpy.load' when `import numpy as np`; None for non-name expressions."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def _check_name(self, node: ast.AST, name: str) -> None:
        parts = name.split(".")
        if parts[0] == "yaml" and len(parts) > 1:
            attr = parts[-1]
            if ("load" in attr.lower() or "Loader" in attr) and attr not in YAML_SAFE:
                self.flag(node, "yaml", f"{name}: use yaml.safe_load (other loaders can construct objects)")
        if parts[0] in PICKLE_MODULES and len(parts) > 1 and parts[-1] in PICKLE_LOADERS:
            self.flag(node, "pickle", f"{name}: unpickling runs arbitrary code; use JSON, .npy or safetensors")
        if name in ("pandas.read_pickle", "torch.jit.load"):
            self.flag(node, "pickle", f"{name}: loads a pickle")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        if name:
            self._check_name(node, name)
        self.generic_visit(node)

    # calls ---------------------------------------------------------------------------------
    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            self.flag(node, "eval", f"builtin {name}(): runs code from a string")
        if name in ("torch.load", "torch.serialization.load") and not _is_true(kw.get("weights_only", ast.Constant(None))):
            self.flag(node, "torch.load", f"{name} without weights_only=True unpickles arbitrary objects")
        if name in ("torch.save", "torch.serialization.save"):
            self.flag(node, "torch.save", f"{name}: write tensors as safetensors (save_file / save_pretrained)")
        if "allow_pickle" in kw and not _is_false(kw["allow_pickle"]):
            self.flag(node, "pickle", f"{name}(allow_pickle=...): object arrays are pickles")
        if "safe_serialization" in kw and not _is_true(kw["safe_serialization"]):
            self.flag(node, "torch.save", f"{name}(safe_serialization=...): weights must be safetensors")
        if "trust_remote_code" in kw and not _is_false(kw["trust_remote_code"]):
            self.flag(node, "trust_remote_code", f"{name}(trust_remote_code=...) runs code from the Hub")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for k, v in zip(node.keys, node.values, strict=True):
            if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and not _is_false(v):
                self.flag(node, "trust_remote_code", "{'trust_remote_code': ...} runs code from the Hub")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and TRUTHY_STRING.search(node.value):
            self.flag(node, "trust_remote_code", "'trust_remote_code=True' in a string (e.g. model_args)")


def check_source(source: str, filename: str = "<string>") -> list[tuple[int, str, str]]:
    checker = _Checker()
    checker.visit(ast.parse(source, filename))
    return sorted(set(checker.found))


@cache
def tracked_files() -> tuple[Path, ...]:
    # tracked files, and new ones not yet added (but not ignored ones such as .venv/)
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    files = tuple(ROOT / line for line in out.stdout.splitlines() if line)
    assert len(files) > 20, "git ls-files found almost nothing; is this a checkout?"
    return tuple(f for f in files if f.resolve() != THIS and f.exists())


@cache
def all_findings() -> tuple[tuple[str, int, str, str], ...]:
    found = []
    for path in tracked_files():
        rel = str(path.relative_to(ROOT))
        for line, rule, msg in check_source(path.read_text(encoding="utf-8"), rel):
            if f"{rel}:{line}" not in ALLOWED and not (rule == "trust_remote_code" and rel in OFFICIAL_SIDE):
                found.append((rel, line, rule, msg))
    return tuple(found)


@pytest.mark.parametrize("rule", ["torch.load", "torch.save", "pickle", "yaml", "trust_remote_code", "eval"])
def test_no_unsafe_loading(rule):
    offenders = [f"{rel}:{line}: {msg}" for rel, line, r, msg in all_findings() if r == rule]
    assert not offenders, f"{len(offenders)} unsafe use(s) ({rule}):\n" + "\n".join(offenders)


def test_model_weights_are_safetensors():
    """The package writes its weights with safetensors' save_file or with save_pretrained (whose
    default is safetensors; `safe_serialization=False` is banned above); with torch.save banned
    too, those are the only ways out."""
    writers = []
    for path in tracked_files():
        if path.relative_to(ROOT).parts[0] != "babymm":
            continue
        tree, checker = ast.parse(path.read_text(encoding="utf-8")), _Checker()
        checker.visit(tree)  # learns the module's imports
        writers += [path.name for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and (checker.dotted(node.func) == "safetensors.torch.save_file"
                                                       or getattr(node.func, "attr", None) == "save_pretrained")]
    assert writers, "babymm/ calls neither safetensors.torch.save_file nor save_pretrained: how are weights saved?"


BAD = {
    "torch.load": ["import torch\ntorch.load(f)", "import torch\ntorch.load(f, weights_only=False)",
                   "import torch as t\nt.load(f, map_location='cpu')", "from torch import load\nload(f)"],
    "torch.save": ["import torch\ntorch.save(model.state_dict(), 'm.pt')",
                   "model.save_pretrained(d, safe_serialization=False)"],
    "pickle": ["import pickle\npickle.load(f)", "import pickle\npickle.loads(b)", "from pickle import loads",
               "import numpy as np\nnp.load(f, allow_pickle=True)", "import pandas as pd\npd.read_pickle(f)",
               "import joblib\njoblib.load(f)"],
    "yaml": ["import yaml\nyaml.load(s)", "import yaml\nyaml.load(s, Loader=yaml.Loader)",
             "import yaml\nyaml.unsafe_load(s)", "import yaml\nyaml.full_load(s)", "from yaml import Loader"],
    "trust_remote_code": ["AutoModel.from_pretrained(p, trust_remote_code=True)",
                          "load_dataset(p, trust_remote_code=flag)", "kw = {'trust_remote_code': True}",
                          "args = 'pretrained=x,trust_remote_code=True'"],
    "eval": ["eval('1 + 1')", "exec(code)", "import builtins\nbuiltins.eval(s)"],
}
GOOD = [
    "import torch\ntorch.load(f, weights_only=True, map_location='cpu')",
    "import yaml\nyaml.safe_load(s)\nyaml.safe_dump(x)\nyaml.YAMLError",
    "model.eval()\nevaluate_run(x)\nself.eval()\nlm.evaluate()",
    "import numpy as np\nnp.load(f, mmap_mode='r')\nnp.load(f, allow_pickle=False)",
    "AutoModelForCausalLM.from_pretrained(p)\nAutoTokenizer.from_pretrained(p, trust_remote_code=False)",
    "from safetensors.torch import load_file, save_file\nsave_file(sd, p)\nload_file(p)",
    "model.save_pretrained(d)\nmodel.save_pretrained(d, safe_serialization=True)",
    "import json\njson.load(f)\njson.loads(s)",
]


@pytest.mark.parametrize("rule, source", [(r, s) for r, srcs in BAD.items() for s in srcs])
def test_checker_catches(rule, source):
    """The checker is not vacuous: each known-bad snippet is flagged, under the right rule."""
    found = check_source(source)
    assert rule in {r for _, r, _ in found}, (source, found)


@pytest.mark.parametrize("source", GOOD)
def test_checker_allows_safe_code(source):
    assert check_source(source) == []
