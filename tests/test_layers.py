"""The package's floors: each module imports only its own floor or lower ones, and no cycles.

Every ``import multitower.X`` is found statically, including imports inside
functions (``ast.walk``), so a cycle hidden in a function body fails too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import multitower

# Lowest first. A part may import parts of its own floor or of lower floors only.
FLOORS: list[set[str]] = [
    {"config", "io", "errors", "progress", "__init__"},
    {"nn", "data", "interleave"},
    {"models", "losses"},
    {"generation"},
    {"train", "eval"},
    {"experiments"},
    {"cli", "__main__"},
]
ROOT = Path(multitower.__file__).parent


def floor_of(part: str) -> int:
    for i, parts in enumerate(FLOORS):
        if part in parts:
            return i
    raise AssertionError(f"{part!r} is on no floor: add it to FLOORS in {__file__}")


def imports(root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(importing part, imported part, where) for every static import of multitower."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("multitower."):
                    dst = name.split(".")[1]
                    if dst != src:
                        edges.append((src, dst, f"{rel}:{node.lineno} imports {name}"))
    return edges


def test_every_import_goes_down_or_sideways():
    upward = [where for src, dst, where in imports() if floor_of(dst) > floor_of(src)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_cycles_between_parts():
    edges = {(src, dst) for src, dst, _ in imports()}
    cycles = sorted({tuple(sorted(e)) for e in edges if (e[1], e[0]) in edges})
    assert not cycles, f"parts that import each other: {cycles}"


def test_the_checker_finds_an_upward_import_hidden_in_a_function(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.py").write_text(
        "import torch\n\n\ndef f():\n    from multitower.cli.main import main\n    return main\n"
    )
    (tmp_path / "losses.py").write_text("from multitower.models.m import f\n")
    found = {(src, dst) for src, dst, _ in imports(tmp_path)}
    assert found == {("models", "cli"), ("losses", "models")}
    assert floor_of("cli") > floor_of("models") == floor_of("losses")
