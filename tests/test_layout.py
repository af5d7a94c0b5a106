"""The three rings (README, Layout): the method (maskedkd's core), the program (data, experiments, teachers, the
training program) and the lab (reproduce/). Each imports only from its own ring and the rings inside it, and the
package's imports have no cycle; the lab is a package imported as such (no sys.path or PYTHONPATH edits)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = {"maskedkd.data", "maskedkd.experiments", "maskedkd.teachers", "maskedkd.train", "maskedkd.bench",
           "maskedkd.demo", "maskedkd.reproducible"}
RING = {"method": 0, "program": 1, "lab": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ring(mod: str) -> str:
    if mod.startswith("reproduce"):
        return "lab"
    return "program" if any(mod == p or mod.startswith(p + ".") for p in PROGRAM) else "method"


def imports(path: Path) -> set[str]:
    """Every project module `path` imports, at any depth of its code (function-level imports count)."""
    mod, out = module_name(path), set()
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        out |= {n for n in names if n.split(".")[0] in ("maskedkd", "reproduce")}
    return {resolve(n) for n in out} - {None, mod}


def resolve(name: str) -> str | None:
    """The module a dotted import name lands in (an imported attribute belongs to its module)."""
    while name:
        if (ROOT / (name.replace(".", "/") + ".py")).is_file() or (ROOT / name.replace(".", "/") / "__init__.py").is_file():
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    files = [*ROOT.glob("maskedkd/**/*.py"), *ROOT.glob("reproduce/**/*.py")]
    return {module_name(f): imports(f) for f in files}


def test_each_ring_imports_only_inward():
    g = graph()
    outward = [(m, d) for m, deps in g.items() for d in deps
               if d not in ("maskedkd",) and RING[ring(d)] > RING[ring(m)]]
    assert outward == []


# Inside the program ring, data flows down this list: a module imports only from its own layer and those before it.
PROGRAM_LAYERS = ("maskedkd.data", "maskedkd.experiments", "maskedkd.teachers", "maskedkd.train")


def layer(mod: str) -> int | None:
    return next((i for i, p in enumerate(PROGRAM_LAYERS) if mod == p or mod.startswith(p + ".")), None)


def test_no_import_runs_back_up():
    """Within the program ring data -> experiments -> teachers -> train; in the lab, reproduce/lib serves the scripts
    and never imports one of them (a library that imports the scripts it serves makes a circle)."""
    g = graph()
    up = [(m, d) for m, deps in g.items() for d in deps
          if layer(m) is not None and layer(d) is not None and layer(d) > layer(m)]
    lab = [(m, d) for m, deps in g.items() for d in deps
           if m.startswith("reproduce.lib") and d.startswith("reproduce") and not d.startswith("reproduce.lib")
           and d != "reproduce"]
    assert up == [] and lab == []


def test_there_is_no_import_cycle():
    """Neither in the package nor in the lab, at any depth of the code (function-level imports count)."""
    g = {m: {d for d in deps if d not in ("maskedkd", "reproduce")} for m, deps in graph().items()}
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for d in sorted(g.get(m, ())):
            visit(d)
        stack.pop()

    for m in sorted(g):
        visit(m)
    assert cycles == []


def test_no_package_module_serves_only_the_lab_or_the_tests():
    g = graph()
    used = {d for m, deps in g.items() if not m.startswith("reproduce") for d in deps}
    entry = {"maskedkd", "maskedkd.train", "maskedkd.bench", "maskedkd.demo", "maskedkd.timm_task",
             "maskedkd.data", "maskedkd.experiments"}  # run with -m, or the public API's own imports
    alone = sorted(m for m in g if m.startswith("maskedkd") and m not in used and m not in entry
                   and not m.startswith("maskedkd.experiments.") and m != "maskedkd.reproducible")
    assert alone == []


def test_the_lab_is_a_package_without_path_edits():
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.glob("reproduce/**/*") if p.is_file()
                 and p.suffix in (".py", ".sh") and ("sys.path" in p.read_text() or "PYTHONPATH" in p.read_text())]
    assert offenders == []
