"""The package's import structure (issue 28): no import circle between its modules, and no
library module importing a command-line module (``cli*.py``: argument parsing and printing sit
on top of the library, never under it). Imports inside functions count: they are arrows too, only
later ones. Read from the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
# pyproject.toml's package-dir: the root folders architectures/ and trainers/ are pu_nnunet's
PACKAGE_ROOTS = {"pu_nnunet": REPOSITORY / "pu_nnunet", "pu_nnunet.architectures": REPOSITORY / "architectures",
                 "pu_nnunet.trainers": REPOSITORY / "trainers"}


def module_files() -> dict[str, Path]:
    modules = {}
    for package, root in PACKAGE_ROOTS.items():
        for path in root.rglob("*.py"):
            if package == "pu_nnunet" and path.relative_to(root).parts[0] in ("architectures", "trainers"):
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports (a package import counts as its __init__)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def _parents(name: str) -> set[str]:
    """A module's packages: importing it runs their __init__ first (not an arrow of its own)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_there_is_no_import_circle():
    graph = import_graph()
    # a package's __init__ importing its own submodules is how packages export; leave those arrows
    # (and a submodule's import of its own package) out, as Python runs them in a fixed order
    edges = {a: {b for b in targets if b not in _parents(a) and a not in _parents(b)} for a, targets in graph.items()}
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                circles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_no_library_module_imports_a_command_line_module():
    def is_cli(module: str) -> bool:
        return module == "pu_nnunet.cli" or module.rsplit(".", 1)[-1].startswith("cli_")

    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() if not is_cli(a)
                   for b in targets if is_cli(b))
    assert not wrong, "library modules importing CLI modules:\n" + "\n".join(wrong)


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert len(graph) > 100
    assert "pu_nnunet.trainers.registry" in graph["pu_nnunet.trainers.transfer_weights"]
    # the two checks above cover the study's subpackages, robustness and the demo too
    assert "pu_nnunet.study.execution.steps" in graph["pu_nnunet.study.execution.worker"]
    assert "pu_nnunet.study.report.run_level" in graph["pu_nnunet.study.report.study_report"]
    assert "pu_nnunet.study.api" in graph["pu_nnunet.demo.pipeline"]
    assert any(name.startswith("pu_nnunet.robustness.") for name in graph)


def test_robustness_is_called_by_the_study_steps_never_calls_them():
    """Issue 28: the study's steps call the robustness library (its sweep takes the evaluation as
    a callable and predicts through pu_nnunet.inference); robustness never imports how a study
    runs its jobs (pu_nnunet.study.execution: steps, runner, worker) nor how it reports them (its
    statistics and formatting come from pu_nnunet.evaluation, as the study report's do)."""
    execution = ("pu_nnunet.study.execution", "pu_nnunet.study.report")
    graph = import_graph()
    robustness = [name for name in graph if name.startswith("pu_nnunet.robustness")]
    assert "pu_nnunet.robustness.study_sweep" in robustness
    wrong = sorted(f"{a} -> {b}" for a in robustness for b in graph[a]
                   if any(b == module or b.startswith(module + ".") for module in execution))
    assert not wrong, "robustness importing the study's execution or report:\n" + "\n".join(wrong)


def test_the_study_report_reads_the_model_never_the_execution():
    """report/ reads what execution/ wrote through the study model (which cases score a run:
    Study.held_out_cases), so how jobs run can change without the report noticing, and back."""
    graph = import_graph()
    report = [name for name in graph if name.startswith("pu_nnunet.study.report.")]
    assert "pu_nnunet.study.report.operating_points_section" in report
    wrong = sorted(f"{a} -> {b}" for a in report for b in graph[a] if b.startswith("pu_nnunet.study.execution"))
    assert not wrong, "study report modules importing execution:\n" + "\n".join(wrong)


def test_the_demo_uses_only_the_study_public_api():
    """pu_nnunet/demo reaches the study through pu_nnunet/study/api.py alone (issue 28), so the
    study's modules and its folder layout can change without the demo noticing."""
    graph = import_graph()
    demo = [name for name in graph if name.startswith("pu_nnunet.demo")]
    assert "pu_nnunet.demo.cli_demo" in demo
    wrong = sorted(f"{a} -> {b}" for a in demo for b in graph[a]
                   if b.startswith("pu_nnunet.study") and b not in ("pu_nnunet.study", "pu_nnunet.study.api"))
    assert not wrong, "demo modules importing study internals:\n" + "\n".join(wrong)


def test_the_study_model_imports_neither_its_execution_nor_its_report():
    """pu_nnunet/study's top level is the study model (spec, jobs, presets, ...): running a study
    (execution/) and reporting on it (report/) read it, never the other way (issue 28)."""
    graph = import_graph()
    # api.py and cli_study.py sit on top of all three
    model = [name for name in graph if name.startswith("pu_nnunet.study.") and name.count(".") == 2
             and not name.rsplit(".", 1)[1].startswith(("api", "cli_", "execution", "report"))]
    assert {"pu_nnunet.study.spec", "pu_nnunet.study.jobs", "pu_nnunet.study.presets"} <= set(model)
    wrong = sorted(f"{a} -> {b}" for a in model for b in graph[a]
                   if b.startswith(("pu_nnunet.study.execution", "pu_nnunet.study.report")))
    assert not wrong, "study model modules importing execution or report:\n" + "\n".join(wrong)
