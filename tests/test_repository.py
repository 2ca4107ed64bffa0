"""The repository keeps its promises: CI runs the README's commands, and nothing pulls torchvision."""

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_commands_verbatim():
    commands = readme_commands()
    assert len(commands) == 2 and all(commands)
    assert "pytest" in commands[1] and "pip install" in commands[0] and "pip install" in commands[1]
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for command in commands:
        assert command in ci_lines, f"README command not run by .ci/run: {command}"


def test_dependencies_never_name_torchvision():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"]) + [
        d for extra in project["optional-dependencies"].values() for d in extra
    ]
    assert not [
        d for d in names if d.lower().startswith(("torchvision", "torchaudio", "decord", "torchcodec"))
    ]
    assert any(d.startswith("torch>=2.13") for d in names)


def imported_modules(path: Path) -> set[str]:
    """The dotted names a Python file imports, relative imports resolved against its package."""
    import ast

    package = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_the_installed_package_never_imports_testing_utils():
    package = ROOT / "src" / "transformers_mavors"
    offenders = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if path.name != "testing_utils.py" and "transformers_mavors.testing_utils" in imported_modules(path)
    ]
    assert offenders == []
    # the check resolves relative imports: testing_utils' own `from .tiny import ...` is seen
    assert "transformers_mavors.tiny.build_tiny_tokenizer" in imported_modules(package / "testing_utils.py")
