"""The shape of the code: imports go one way, and `python babymm/train.py` needs no path hack."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT = ROOT / "babymm" / "train.py"  # wires data_prep, the library and eval together


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_library_imports_neither_data_prep_nor_eval():
    offenders = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & {"data_prep", "eval"})
                 for p in (ROOT / "babymm").rglob("*.py") if p != ENTRY_POINT}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_data_prep_and_eval_do_not_import_each_other():
    for package, other in (("data_prep", "eval"), ("eval", "data_prep")):
        offenders = [str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py")
                     if other in imported_packages(p)]
        assert offenders == [], f"{package} imports {other}"


def test_no_library_module_shadows_a_top_level_module():
    """Run as a script, babymm/ is sys.path[0]: a babymm/<name>.py would shadow `import <name>`."""
    import importlib.metadata

    top_level = set(sys.stdlib_module_names)
    for dist in importlib.metadata.distributions():
        top_level.update((dist.read_text("top_level.txt") or "").split())
    ours = {p.stem for p in (ROOT / "babymm").glob("*.py")} | {p.name for p in (ROOT / "babymm").iterdir() if p.is_dir()}
    assert sorted(ours & top_level) == []


def test_train_py_runs_as_a_script_without_a_path_hack():
    assert "sys.path" not in ENTRY_POINT.read_text()
    out = subprocess.run([sys.executable, str(ENTRY_POINT), "--model_type", "flamingo", "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--cross_attn_every" in out.stdout and "--preset" in out.stdout
