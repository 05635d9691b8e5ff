"""The package's shape: modules import each other without cycles, and the CLI's management
commands do not load the engine (HTTP client, tracing) they never use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "notifier"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """notifier modules imported at module level (not under TYPE_CHECKING, not in functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("notifier"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("notifier"))
    return found


def test_no_import_cycles() -> None:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {m for m in imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for child in sorted(graph[name]):
            # importing a package runs its __init__, which imports no siblings here
            visit(child, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_management_commands_do_not_load_the_engine() -> None:
    code = (
        "import sys, notifier.cli, notifier.store; "
        "print(sorted(m for m in sys.modules if m.startswith(('notifier.engine.sender', "
        "'notifier.engine.router', 'notifier.engine.delivery', 'notifier.admin', "
        "'notifier.telemetry.metrics', 'notifier.telemetry.observer', "
        "'notifier.telemetry.traces', 'aiohttp.client'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"
