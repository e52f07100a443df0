"""The policy core stays pure: no clock, randomness, asyncio or I/O of its own."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "engine" / "policy"
FORBIDDEN = {
    "time", "datetime", "random", "asyncio", "socket", "threading", "os", "io", "pathlib",
    "subprocess", "requests", "httpx", "redis", "asyncpg", "psycopg", "boto3", "aiobotocore",
    "fastapi", "simpy", "yaml", "numpy",
}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_core_imports_nothing_impure() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 9
    offenders = {
        path.name: sorted(imported_roots(path) & FORBIDDEN)
        for path in files
        if imported_roots(path) & FORBIDDEN
    }
    assert offenders == {}


def test_the_core_imports_no_other_part_of_the_toolkit() -> None:
    for path in CORE.glob("*.py"):
        roots = imported_roots(path)
        assert "engine" not in roots or all(
            line.startswith(("from engine.policy", "import engine.policy"))
            for line in path.read_text().splitlines()
            if line.startswith(("from engine", "import engine"))
        ), path.name
        assert not roots & {"sim", "chaos", "loadtests", "reports", "reslab", "scenarios"}, (
            path.name
        )
