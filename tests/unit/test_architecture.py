"""The layers of ARCHITECTURE.md, checked on the source: every import is read from the syntax tree,
type-only ones under `if TYPE_CHECKING:` and ones inside functions included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

# Lowest first: a module may import its own layer and the ones before it, never a later one.
LAYERS = (
    "mooltiproxy.core",
    "mooltiproxy.parsers",  # what reads generated text: pure, below the configuration that names them
    "mooltiproxy.guardrails",  # what guards look for in a text, and where the text is: pure as well
    "mooltiproxy.config",
    "mooltiproxy.state",
    "mooltiproxy.serving",
    "mooltiproxy.guard",
    "mooltiproxy.forwarding",
    "mooltiproxy.translation",
    "mooltiproxy.plugin",  # what plug-ins import
    "mooltiproxy.backends",
    "mooltiproxy.fronts",
    "mooltiproxy.operations",
    "mooltiproxy",  # proxy.py, server.py, workers.py: the stages put together
    "main",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, package: str) -> set[str]:
    """Every module of ours the source imports, relative imports resolved against its package."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from package import module` imports the module, not a name of the package.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {module for module in found if module in MODULES}


def layer_of(module: str) -> int:
    """The index of the longest layer name the module falls under."""
    matches = [i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")]
    return max(matches, key=lambda i: len(LAYERS[i]))


SOURCES = [
    *ROOT.glob("mooltiproxy/**/*.py"),
    ROOT / "main.py",
]
MODULES = {module_name(path) for path in SOURCES}
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text()
INIT_FILES = {str(path.relative_to(ROOT)) for path in SOURCES if path.name == "__init__.py"}


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


IMPORTS = {module_name(path): imported_modules(path.read_text(), package_of(path)) for path in SOURCES}


def test_every_subpackage_has_a_layer():
    subpackages = {f"mooltiproxy.{p.name}" for p in (ROOT / "mooltiproxy").iterdir() if (p / "__init__.py").exists()}
    assert subpackages == {layer for layer in LAYERS if layer.startswith("mooltiproxy.")} - {"mooltiproxy.plugin"}


def test_type_only_relative_and_late_imports_are_read():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mooltiproxy.proxy import Proxy\n"
        "from ..core import errors\n"
        "def later():\n    import mooltiproxy.server\n"
    )
    found = imported_modules(source, "mooltiproxy.serving")
    assert {"mooltiproxy.proxy", "mooltiproxy.core.errors", "mooltiproxy.server"} <= found


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_later_layer(module):
    upward = sorted(dep for dep in IMPORTS[module] if layer_of(dep) > layer_of(module))
    assert not upward, f"{module} (layer {LAYERS[layer_of(module)]}) imports later layers: {upward}"


# The plug-in examples the documentation gives, as an operator would copy them into mappers/ or prompters/.
PLUGIN_EXAMPLES = [
    block
    for guide in ("docs/extending.md", "mappers/README.md", "prompters/README.md")
    for block in re.findall(r"```python\n(.*?)```", (ROOT / guide).read_text(), re.S)
    if block.startswith(("# mappers/", "# prompters/")) or "mooltiproxy.plugin" in block
]


@pytest.mark.parametrize("example", PLUGIN_EXAMPLES, ids=lambda block: block.splitlines()[0])
def test_plugin_examples_import_only_the_facade(example):
    ours = {module for module in imported_modules_any(example) if module.split(".")[0] == "mooltiproxy"}
    assert ours <= {"mooltiproxy.plugin"}, f"a plug-in imports {sorted(ours)}; plug-ins import mooltiproxy.plugin"


def test_architecture_md_names_every_module_and_only_those():
    named = set(re.findall(r"`((?:mooltiproxy/)[\w/]+\.py|main\.py)`", ARCHITECTURE))
    files = {str(path.relative_to(ROOT)) for path in SOURCES if path.name != "__init__.py"}
    assert not files - named, f"modules ARCHITECTURE.md does not name: {sorted(files - named)}"
    assert not named - files - INIT_FILES, f"ARCHITECTURE.md names modules that do not exist: {sorted(named - files)}"


TIERS = {"unit", "e2e"}


def test_no_test_module_imports_another():
    """Tests share what they share through tests/support/ and conftest, never through each other."""
    tests = sorted(ROOT.glob("tests/**/test_*.py"))
    for path in tests:
        imported = imported_modules_any(path.read_text())
        ours = {name for name in imported if name.split(".")[0].startswith("test_") or name.split(".")[0] in TIERS}
        assert not ours, f"{path} imports {sorted(ours)}"


def imported_modules_any(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_no_import_circle():
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(IMPORTS[module]):
            if state.get(dep) == "open":
                pytest.fail("import circle: " + " -> ".join([*path[path.index(dep) :], dep]))
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
