"""What dagbot declares: every import is a declared dependency, bounded; tools pinned exactly;
requirements.txt pins what pyproject declares; no comment points to a file we do not hold."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from scheduler.tools.mcp_config import resolve_command

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(line) for line in PROJECT["dependencies"]]
TEST = [Requirement(line) for line in PROJECT["optional-dependencies"]["test"]]
OURS = {"bot", "domain", "scheduler", "storage", "tests", "benchmarks", "scripts"}
# Imported by the test suite but brought by a declared package (pytest brings its plugin API).
TEST_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "ruff", "mypy", "import-linter"}


def third_party_imports(*folders: str) -> set[str]:
    names: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in OURS | {"__future__"}}


def distributions(imports: set[str]) -> dict[str, set[str]]:
    """Import name -> the installed distributions that provide it."""
    provided = packages_distributions()
    return {name: {canonicalize_name(d) for d in provided.get(name, [])} for name in imports}


def declared(requirements: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements}


def test_every_import_of_dagbot_itself_is_a_declared_runtime_dependency() -> None:
    runtime = declared(RUNTIME)
    missing = {
        name: dists
        for name, dists in distributions(third_party_imports("bot", "scheduler", "storage")).items()
        if not dists & runtime
    }
    assert not missing, f"imported but not in [project] dependencies: {missing}"


def test_every_import_of_the_tests_is_declared() -> None:
    everything = declared(RUNTIME) | declared(TEST)
    missing = {
        name: dists
        for name, dists in distributions(third_party_imports("tests", "benchmarks")).items()
        if not dists & everything
    }
    assert not missing, f"imported by tests or benchmarks but not declared: {missing}"


def test_runtime_dependencies_have_both_bounds() -> None:
    for requirement in RUNTIME:
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators, requirement
        assert "<" in operators, requirement


def test_development_tools_are_pinned_exactly() -> None:
    tools = [
        r for r in TEST if canonicalize_name(r.name) in TEST_TOOLS or r.name.startswith("types-")
    ]
    assert {canonicalize_name(r.name) for r in tools} >= TEST_TOOLS
    for tool in tools:
        [spec] = tool.specifier
        assert spec.operator == "==", tool


def test_requirements_txt_pins_every_runtime_dependency_within_its_bounds() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == ".", "requirements.txt ends by installing dagbot itself"
    pins: dict[str, Version] = {}
    for line in lines[:-1]:
        name, _, version = line.partition("==")
        assert version, f"not pinned: {line}"
        pins[canonicalize_name(name)] = Version(version)
    for requirement in RUNTIME:
        name = canonicalize_name(requirement.name)
        assert name in pins, (
            f"{name} is declared but not in requirements.txt: make requirements.txt"
        )
        assert requirement.specifier.contains(pins[name]), (requirement, pins[name])


def test_the_python_version_file_matches_requires_python() -> None:
    version = (ROOT / ".python-version").read_text().strip()
    assert PROJECT["requires-python"] == f">={version}"


def test_no_comment_points_to_a_file_the_repository_does_not_hold() -> None:
    mentioned = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
    held = {p.name for folder in [".", "docs", *OURS] for p in (ROOT / folder).glob("*.md")}
    dangling = []
    for path in [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md")] + [
        p for folder in sorted(OURS) for p in (ROOT / folder).rglob("*.py")
    ]:
        for name in mentioned.findall(path.read_text()):
            if name not in held:
                dangling.append(f"{path.relative_to(ROOT)}: {name}")
    assert not dangling


def test_a_bare_command_is_found_beside_the_running_interpreter(tmp_path: Path) -> None:
    tool = tmp_path / "some-mcp-server"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    not_executable = tmp_path / "plain-file"
    not_executable.write_text("")

    assert resolve_command("some-mcp-server", tmp_path) == str(tool)
    assert resolve_command("plain-file", tmp_path) == "plain-file"
    assert resolve_command("not-there", tmp_path) == "not-there"
    assert resolve_command("./some-mcp-server", tmp_path) == "./some-mcp-server"
    # The reference time server comes with dagbot, in the interpreter's environment.
    assert resolve_command("mcp-server-time") == str(
        Path(sys.executable).parent / "mcp-server-time"
    )
