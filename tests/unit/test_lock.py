"""uv.lock stays true to pyproject.toml: a dependency added to or removed from one and not the
other fails the suite, as it fails `scripts/setup` (which installs with `--locked`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".tools" / "bin" / "uv"


def lock_check(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), "lock", "--check", "--offline", "--python", "python3"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never"},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_committed_lock_matches_pyproject(project: Path) -> None:
    done = lock_check(project)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('    "rich>=13",\n', ""),  # removed from pyproject.toml only
        ('    "rich>=13",\n', '    "rich>=13",\n    "idna>=3",\n'),  # added only there
        ('"aiohttp>=3.9"', '"aiohttp>=99"'),  # a range the locked version is outside of
    ],
)
def test_a_dependency_changed_in_pyproject_alone_fails_the_check(
    project: Path, old: str, new: str
) -> None:
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    assert old in text
    pyproject.write_text(text.replace(old, new, 1))
    done = lock_check(project)
    assert done.returncode != 0
    assert "uv.lock" in done.stderr or "unsatisfiable" in done.stderr, done.stderr
