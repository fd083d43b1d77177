"""The house: stages/ holds only the DVC stage entry points, and dvc.yaml declares what each one reads.

A stage's `deps` in dvc.yaml must cover exactly the project modules it imports, directly or not: its own
modules one by one, the shared infrastructure as the one folder medical_matryoshka/core. A module left out
would let DVC serve a stale cached output after that module changed; one listed but not imported would rerun
the stage for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGES = ("stages", "medical_matryoshka", "commands")  # top-level packages of this project


def module_file(name: str) -> Path | None:
    """The project file of a dotted module name, or None for a module outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = REPO.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports at run time, at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node) for n in ast.walk(node)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def project_closure(module: str) -> set[Path]:
    """The project files `module` runs: itself and everything it imports, transitively."""
    seen: set[Path] = set()
    todo = [module_file(module)]
    while todo:
        path = todo.pop()
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(name) for name in imported_modules(path))
    return seen


def pipeline() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def stage_module(spec: dict) -> str:
    cmd = spec["cmd"].split()
    assert cmd[:2] == ["python", "-m"], f"a stage runs as `python -m stages.<name>`, not {spec['cmd']!r}"
    return cmd[2]


CORE = "medical_matryoshka/core"  # the infrastructure every stage runs on: one folder dep in each stage


def project_files(folder: str) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob("*.py") if p.name != "__init__.py"}


@pytest.mark.parametrize("stage", list(pipeline()))
def test_stage_deps_list_exactly_the_modules_it_imports(stage):
    spec = pipeline()[stage]
    imported = {p.relative_to(REPO).as_posix() for p in project_closure(stage_module(spec)) if p.name != "__init__.py"}
    declared = {d for d in spec["deps"] if d.endswith(".py")}
    assert CORE in spec["deps"], f"dvc.yaml stage {stage}: add {CORE} (what every stage runs on) to its deps"
    covered = declared | project_files(CORE)
    assert not declared & project_files(CORE), f"dvc.yaml stage {stage}: {CORE} is listed once, as the folder"
    assert imported <= covered and declared <= imported, (
        f"dvc.yaml stage {stage}: add {sorted(imported - covered)}, remove {sorted(declared - imported)}"
    )


def test_core_imports_only_core_and_every_stage_uses_all_of_it():
    # the folder dep covers a stage's infrastructure only while core imports nothing outside it; and a module
    # no stage runs does not belong there (a change to it would rerun every stage for nothing)
    core_modules = {f.removesuffix(".py").replace("/", ".") for f in project_files(CORE)}
    for module in core_modules:
        outside = {p.relative_to(REPO).as_posix() for p in project_closure(module)} - project_files(CORE)
        assert not {p for p in outside if not p.endswith("__init__.py")}, f"{module} imports {sorted(outside)}"
    used = set().union(*(project_closure(stage_module(spec)) for spec in pipeline().values()))
    unused = project_files(CORE) - {p.relative_to(REPO).as_posix() for p in used}
    assert not unused, f"{sorted(unused)}: no stage imports it; move it out of {CORE}"


def test_package_init_files_hold_no_code():
    # a stage's deps leave out __init__.py files: that is only safe while they hold nothing but a docstring
    for init in REPO.glob("*/**/__init__.py"):
        if ".venv" in init.parts:
            continue
        body = ast.parse(init.read_text(encoding="utf-8")).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), init


def test_stages_folder_holds_only_the_pipeline_entry_points():
    modules = {p.stem for p in (REPO / "stages").glob("*.py")} - {"__init__"}
    assert modules == {stage_module(spec).removeprefix("stages.") for spec in pipeline().values()}


def test_the_plot_reads_the_column_evaluate_writes():
    from medical_matryoshka.core.params import load_params
    from medical_matryoshka.core.sections import EvalConfig, read_section
    from medical_matryoshka.plots import plot_column

    column = plot_column(read_section(EvalConfig, load_params(REPO / "params.yaml"), "eval"))
    (plot,) = [p for p in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"] if isinstance(p, dict)]
    (spec,) = plot.values()
    assert set(spec["y"].values()) == {column}


def test_the_core_folder_dep_hashes_source_only():
    # Python writes __pycache__/ beside the modules it imports; were DVC to hash it with the folder, every
    # test run or new Python would rerun all stages
    import subprocess
    import sys

    pyc = f"{CORE}/__pycache__/errors.cpython-311.pyc"
    cmd = [sys.executable, "-m", "dvc", "check-ignore", pyc]
    checked = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip() == pyc, ".dvcignore must exclude __pycache__/"


def test_a_stage_reading_a_section_declares_its_top_level_knobs():
    # `-S lr=3e-5` changes a top-level key: a stage reading train must list it, or DVC would not rerun it
    from medical_matryoshka.core.schema import top_level
    from medical_matryoshka.core.sections import SECTIONS

    for name, spec in pipeline().items():
        declared = set(spec.get("params", []))
        for key in declared & set(SECTIONS):
            missing = set(top_level(SECTIONS[key])) - declared
            assert not missing, f"stage {name} reads {key} but dvc.yaml does not declare {sorted(missing)}"
