"""docs/architecture.md, enforced where a test can: the checklists' links hold, the suite contract holds for
every registered suite, every mixer has a MAD architecture (hence a shim), and top-level imports form no circle."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


def test_every_path_the_architecture_doc_names_exists():
    named = set(re.findall(r"`((?:grid|evals|configs|tests|docs)/[A-Za-z0-9_./<>-]*)`", DOC.read_text()))
    concrete = {p.rsplit("/", 1)[0] if "<" in p else p.rstrip("/") for p in named}  # a pattern: its folder
    missing = sorted(p for p in concrete if not (ROOT / p).exists())
    assert len(concrete) > 20 and not missing, missing


def test_every_registered_suite_implements_the_contract():
    from grid.run.suites import SUITES, get_suite

    for name in SUITES:
        module = get_suite(name)
        assert module.NAME == name
        assert isinstance(module.RUNTIME_FIELDS, tuple) and all(isinstance(f, str) for f in module.RUNTIME_FIELDS)
        for hook in ("run_file", "upgrade_row"):
            assert callable(getattr(module, hook, None)) or not hasattr(module, hook), (name, hook)
    assert all(hasattr(get_suite(n), "run_file") for n in ("lm", "mad"))  # `python -m grid run FILE` runs both


def test_every_mixer_has_a_mad_architecture_and_so_a_shim():
    from evals.mad.arch import arch_entry, arch_names
    from grid.models.registry import mixer_names

    assert set(mixer_names()) <= {arch_entry(a)["mixer"] for a in arch_names()}


def _top_level_imports(path: Path, package: str) -> set[str]:
    """Project modules a module imports at import time (module body, not inside functions)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try)) else [node]:
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.level == 0 and sub.module:
                out.add(sub.module)
                out |= {f"{sub.module}.{a.name}" for a in sub.names}
    return {m for m in out if m.split(".")[0] in ("grid", "evals")}


def test_no_import_circles():
    modules: dict[str, Path] = {}
    for top in ("grid", "evals"):
        for p in (ROOT / top).rglob("*.py"):
            rel = p.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            modules[name] = p
    graph = {m: {d for d in _top_level_imports(p, m) if d in modules and d != m} for m, p in modules.items()}
    # a package's __init__ importing its own submodules is how registries load them: not a circle
    for m in graph:
        graph[m] = {d for d in graph[m] if not d.startswith(m + ".")}
    cycles, state, stack = [], {}, []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, cycles


def test_a_module_that_imports_inside_functions_says_why():
    """Imports live at module top level; a module that keeps some inside functions (torch, ray, fla, triton on the
    driver, optional packages, modules that import them) says which and why in one `# Lazy here:` comment.
    grid/models/mixers/ follows the registry's own rule (fused builders import fla lazily)."""
    silent = []
    for top in ("grid", "evals"):
        for p in sorted((ROOT / top).rglob("*.py")):
            if "mixers" in p.parts:
                continue
            src = p.read_text()
            lazy = any(isinstance(m, (ast.Import, ast.ImportFrom))
                       for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for m in ast.walk(n))
            if lazy and "Lazy here:" not in src:
                silent.append(str(p.relative_to(ROOT)))
    assert not silent, silent
