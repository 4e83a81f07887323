import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def modules() -> dict[str, Path]:
    """Every module of core, subfolders included, by its dotted name (core.engines.api, ...)."""
    found = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, module: str) -> set[str]:
    """The dotted names a module imports, anywhere in it: at the top and inside functions (an import
    in a function runs too, and a cycle through it fails just the same, only later)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # from core.engines import vlm
    return names


def test_core_never_imports_streamlit_in_its_source():
    for module, path in modules().items():
        assert not any(n.split(".")[0] == "streamlit" for n in imported(path, module)), f"{module} imports streamlit"


def test_importing_all_of_core_does_not_load_streamlit():
    names = ", ".join(name for name in modules() if name != "core")
    code = f"import sys, {names}; print('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert result.stdout.strip() == "False"


def core_imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The core modules a module imports, at the top or inside a function. A package's __init__ is
    left out (importing core.engines.api imports core.engines first, which holds nothing)."""
    return {name for name in imported(path, module) if name in known and name != module}


def import_graph() -> dict[str, set[str]]:
    found = modules()
    packages = {name for name, path in found.items() if path.name == "__init__.py"}
    known = set(found) - packages
    return {name: core_imports(path, name, known) for name, path in found.items() if name in known}


def test_the_package_files_are_empty():
    """So that importing a module of a subfolder imports nothing else of core on the way."""
    for name, path in modules().items():
        if path.name == "__init__.py":
            assert not [n for n in ast.parse(path.read_text()).body if not isinstance(n, ast.Expr)], name


def test_core_has_no_import_cycle():
    graph = import_graph()
    # the graph is read, function-level imports included (a check of the check)
    assert graph["core.chat.turn"] >= {"core.chat.session", "core.engines.api"}
    assert graph["core.engines.loading"] >= {"core.engines.vlm", "core.engines.remote", "core.engines.stt"}
    assert "core.engines.quant" in graph["core.engines.vlm"]  # from core.engines import quant, in a function

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for imported_module in sorted(graph.get(module, ())):
            if imported_module in path:
                return path[path.index(imported_module):] + (imported_module,)
            if found := cycle_from(imported_module, path + (imported_module,)):
                return found
        return None

    for module in graph:
        assert cycle_from(module, (module,)) is None, f"import cycle: {' -> '.join(cycle_from(module, (module,)))}"


def test_the_contract_imports_no_engine():
    """core.engines.api is what every engine and caller imports: it must not import them back."""
    assert not {name for name in import_graph()["core.engines.api"] if name.startswith(("core.engines", "core.chat"))}


def test_making_a_wav_in_a_test_needs_no_openai():
    code = "import sys, tests.fakes; tests.fakes.wav_bytes(tests.fakes.tone(0.1)); print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert result.stdout.strip() == "False"


def test_functions_of_the_chat_pipeline_and_the_pages_fit_on_a_screen():
    """No function over 40 lines in core/chat/ and pages/ (the issue that split Reply into stages)."""
    root = CORE.parent
    long = []
    for path in [*sorted((CORE / "chat").glob("*.py")), *sorted((root / "pages").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 40:
                long.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    assert not long, long
