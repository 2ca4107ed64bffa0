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


def test_the_evaluation_ci_runs_the_documented_install_verbatim():
    """docs/evaluation.md's first bash block is the install `.ci/engines/evaluation.sh` runs in a fresh venv."""
    (install, *_) = re.findall(
        r"```bash\n(.*?)```", (ROOT / "docs" / "evaluation.md").read_text(), flags=re.S
    )
    script = [line.strip() for line in (ROOT / ".ci" / "engines" / "evaluation.sh").read_text().splitlines()]
    assert install.strip() and install.strip() in script


def test_serving_ci_runs_the_documented_install_verbatim():
    """docs/serving.md's first bash block is the CPU install; .ci/engines/serving.sh runs it in an activated venv."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "docs" / "serving.md").read_text(), flags=re.S)
    install = blocks[0].strip()
    assert "pip install torch==2.13.0" in install and "[serving]" in install
    script = (ROOT / ".ci" / "engines" / "serving.sh").read_text()
    lines = [line.strip() for line in script.splitlines()]
    assert install in lines
    assert lines.index("source .venvs/serving/bin/activate") < lines.index(install)
