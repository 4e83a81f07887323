import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def test_core_never_imports_streamlit_in_its_source():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path.name} imports streamlit"


def test_importing_all_of_core_does_not_load_streamlit():
    modules = ", ".join(f"core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
    code = f"import sys, {modules}; print('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert result.stdout.strip() == "False"


def core_imports(path: Path) -> set[str]:
    """The core modules a module imports when it is imported (its top-level imports). Imports inside
    a function are left out: core.engines imports the engine it loads only when it is chosen."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "core":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("core."))
    return names


def test_core_has_no_import_cycle():
    graph = {p.stem: core_imports(p) - {p.stem} for p in CORE.glob("*.py") if p.stem != "__init__"}
    assert graph["turn"] >= {"chat_session", "engines"}  # the graph is read (a check of the check)

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return path[path.index(imported):] + (imported,)
            if found := cycle_from(imported, path + (imported,)):
                return found
        return None

    for module in graph:
        assert cycle_from(module, (module,)) is None, f"import cycle: {' -> '.join(cycle_from(module, (module,)))}"


def test_making_a_wav_in_a_test_needs_no_openai():
    code = "import sys, tests.fakes; tests.fakes.wav_bytes(tests.fakes.tone(0.1)); print('openai' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CORE.parent, check=True)
    assert result.stdout.strip() == "False"
