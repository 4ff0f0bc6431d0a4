"""The layering contract in pyproject.toml ([tool.importlinter]): no module imports from a layer above it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports reads pyproject.toml from the working directory and imports the packages from sys.path.
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_the_tree_keeps_its_layers() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


def test_an_import_from_a_higher_layer_breaks_the_contract(tmp_path: Path) -> None:
    for pkg in ("streams", "rules", "alerts"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    rules_engine = tmp_path / "rules" / "engine.py"
    rules_engine.write_text(rules_engine.read_text() + "\nfrom streams.engine import driver  # noqa\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "0 kept, 1 broken" in res.stdout
    assert "rules.engine -> streams.engine.driver" in res.stdout
