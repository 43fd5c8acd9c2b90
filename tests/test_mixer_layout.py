"""The layout rules of grid/models/mixers (docs/mixers-layout.md), read from the source with `ast`:

* a family file (one that calls `register(...)`) imports shared rooms only, never a sibling family;
  a room imports no family (so the imports stay a tree: families -> rooms -> the rest of grid);
* no module imports a private (_underscore) name from another module (mixers, and grid/evals code that
  imports from the mixers);
* a module whose name starts with `_` registers nothing (the registry's loader skips those files, so a
  mixer registered there would silently be missing);
* imports inside functions are of the heavy/optional packages only (fla, triton, ...), and a module that has
  them says why in a `# lazy: ` comment.
"""
from __future__ import annotations

import ast
from pathlib import Path

import grid.models.mixers as mixers_pkg

PKG = mixers_pkg.__name__
MIXERS = Path(mixers_pkg.__file__).parent
ROOT = MIXERS.parents[2]
LAZY_OK = {"fla", "triton", "flash_attn", "mamba_ssm", "causal_conv1d"}  # packages that may be imported lazily


def modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted(MIXERS.glob("*.py")) if p.stem != "__init__"}


def registers(tree: ast.Module) -> bool:
    """Whether the module calls register(...) at import time (what makes it a mixer family)."""
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "register"
               for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef)) for n in ast.walk(stmt))


def imports(tree: ast.Module):
    """(imported module, imported names, line) of every import statement, relative ones resolved within PKG."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = PKG.rsplit(".", node.level - 1)[0]
                module = f"{base}.{module}" if module else base
            yield module, [a.name for a in node.names], node.lineno


def mixer_modules_imported(module: str, names: list[str]) -> set[str]:
    """The modules of the mixers package that one import statement reaches."""
    if module == PKG:
        return set(names)  # from grid.models.mixers import gla
    if module.startswith(PKG + "."):
        return {module[len(PKG) + 1:].split(".")[0]}
    return set()


def layering_errors(name: str, tree: ast.Module, families: set[str]) -> list[str]:
    errors = []
    for module, names, line in imports(tree):
        for other in mixer_modules_imported(module, names) - {name}:
            if other in families:
                kind = "family" if name in families else "room"
                errors.append(f"{name}.py:{line}: {kind} {name!r} imports family module {other!r}")
    return errors


def private_name_errors(where: str, tree: ast.Module) -> list[str]:
    return [f"{where}:{line}: imports private name(s) {private} from {module}"
            for module, names, line in imports(tree) if module != "__future__"
            for private in [[n for n in names if n.startswith("_")]] if private]


def lazy_import_errors(name: str, tree: ast.Module, source: str) -> list[str]:
    top = {id(n) for n in tree.body}
    lazy = [(m.split(".")[0], line) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top
            for m, _, line in imports(ast.Module(body=[node], type_ignores=[]))]
    errors = [f"{name}.py:{line}: imports {pkg!r} inside a function; only {sorted(LAZY_OK)} may stay lazy"
              for pkg, line in lazy if pkg not in LAZY_OK]
    if lazy and not any(line.startswith("# lazy: ") for line in source.splitlines()):
        errors.append(f"{name}.py: has lazy imports but no '# lazy: <why>' comment")
    return errors


def test_families_import_only_shared_rooms_and_rooms_import_no_family():
    trees = modules()
    families = {name for name, tree in trees.items() if registers(tree)}
    assert {"gla", "deltanet", "lstm", "mamba2"} <= families  # the detection itself works
    errors = [e for name, tree in trees.items() for e in layering_errors(name, tree, families)]
    assert not errors, "\n".join(errors)


def test_no_private_name_crosses_a_module_boundary():
    errors = [e for name, tree in modules().items() for e in private_name_errors(f"{name}.py", tree)]
    for path in sorted([*ROOT.joinpath("grid").rglob("*.py"), *ROOT.joinpath("evals").rglob("*.py")]):
        tree = ast.parse(path.read_text(), str(path))
        if any(mixer_modules_imported(m, n) for m, n, _ in imports(tree)):
            errors += [e for e in private_name_errors(str(path.relative_to(ROOT)), tree) if f" from {PKG}" in e]
    assert not errors, "\n".join(errors)


def test_rooms_named_with_underscore_register_nothing():
    registered_in_rooms = [name for name, tree in modules().items() if name.startswith("_") and registers(tree)]
    assert not registered_in_rooms, f"the registry never imports these (leading '_'): {registered_in_rooms}"


def test_lazy_imports_are_heavy_packages_with_a_reason():
    errors = [e for p in sorted(MIXERS.glob("*.py"))
              for e in lazy_import_errors(p.stem, ast.parse(p.read_text()), p.read_text())]
    assert not errors, "\n".join(errors)


def test_the_checks_catch_what_they_forbid():
    """Each rule on a small module that breaks it (so none of the tests above can pass vacuously)."""
    families = {"gla", "retnet", "lstm"}
    bad = ast.parse("from grid.models.mixers.gla import gla_chunked\n"
                    "from grid.models.mixers import lstm\n"
                    "from .gla import activation\n"
                    "from grid.models.mixers._recurrences import gla_chunked\n")
    assert len(layering_errors("retnet", bad, families)) == 3  # the room import is fine
    assert layering_errors("_room", bad, families)[0].startswith("_room.py:1: room '_room' imports family")
    assert len(private_name_errors("x.py", ast.parse("from grid.models.mixers.lstm import HIDDEN_SIZES, _hidden"))) == 1
    assert not private_name_errors("x.py", ast.parse("from grid.models.mixers._common import RMSNorm"))
    assert registers(ast.parse("register(MixerSpec(name='x'))"))
    assert not registers(ast.parse("def f():\n    register(None)\n"))
    lazy = "def f():\n    import json\n    from fla.layers import GLA\n"
    assert len(lazy_import_errors("m", ast.parse(lazy), lazy)) == 2  # json is not heavy; no reason given
    ok = "# lazy: fla is heavy\ndef f():\n    from fla.layers import GLA\n"
    assert not lazy_import_errors("m", ast.parse(ok), ok)
