"""The test tiers: a test that starts another process (a console script, ``python -m``,
a wheel build) is end to end and marked ``slow``, so ``make test-fast`` leaves it out.

Read from the test files' source, not run: a test is taken to start a process when
its body, a module-level helper it calls or a fixture it takes (its own module's or
conftest's) calls ``subprocess.*``, ``os.system`` or conftest's ``run_ok``. Trainings
inside the test process are not detected; mark long ones ``slow`` by hand.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _is_slow_mark(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "slow" for n in ast.walk(node))


def _spawners(tree: ast.Module, known: set[str]) -> set[str]:
    """Names in ``tree`` (``run_ok`` and its aliases, module-level functions and
    fixtures) that start a process, given ``known`` ones from elsewhere."""
    names = set(known) | {"run_ok"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "run_ok" or node.module == "subprocess":
                    names.add(alias.asname or alias.name)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    changed = True
    while changed:
        changed = False
        for name, function in functions.items():
            if name not in names and _starts_a_process(function, names):
                names.add(name)
                changed = True
    return names


def _starts_a_process(function: ast.FunctionDef, spawners: set[str]) -> bool:
    if any(arg.arg in spawners for arg in function.args.args):  # a fixture that does
        return True
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner = func.value.id
                if owner == "subprocess" or (owner, func.attr) == ("os", "system"):
                    return True
        if isinstance(node, ast.Name) and node.id in spawners:
            return True
    return False


def _unmarked_spawning_tests(path: Path, conftest_spawners: set[str]) -> list[str]:
    tree = ast.parse(path.read_text())
    module_slow = any(
        isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)
        and _is_slow_mark(n.value)
        for n in tree.body
    )
    if module_slow:
        return []
    spawners = _spawners(tree, conftest_spawners)
    tests: list[tuple[ast.FunctionDef, list[ast.expr]]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            tests.append((node, node.decorator_list))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    tests.append((item, [*node.decorator_list, *item.decorator_list]))
    return [
        f"{path.relative_to(path.parents[1])}::{test.name}"
        for test, decorators in tests
        if _starts_a_process(test, spawners) and not any(map(_is_slow_mark, decorators))
    ]


def test_every_test_that_starts_a_process_is_marked_slow():
    conftest = _spawners(ast.parse((TESTS / "conftest.py").read_text()), set()) - {"run_ok"}
    unmarked = [
        name
        for path in sorted(TESTS.rglob("test_*.py"))
        for name in _unmarked_spawning_tests(path, conftest)
    ]
    assert not unmarked, (
        "these tests start a process: mark them @pytest.mark.slow (or the module "
        "`pytestmark = pytest.mark.slow`) so that `make test-fast` leaves them out:\n"
        + "\n".join(unmarked)
    )


def test_the_check_finds_processes_started_directly_or_through_helpers_and_fixtures(tmp_path):
    source = """
import subprocess
import pytest
from tests.conftest import run_ok as _run

def _helper(x):
    return _run([x], None)

@pytest.fixture
def trained(tmp_path):
    subprocess.run(["true"], check=True)

def test_direct():
    subprocess.run(["true"])

def test_through_a_helper():
    _helper("x")

def test_through_a_fixture(trained):
    pass

@pytest.mark.slow
def test_marked():
    subprocess.run(["true"])

@pytest.mark.parametrize("a", [1])
def test_pure(a):
    assert a
"""
    path = tmp_path / "test_sample.py"
    path.write_text(source)
    found = [n.split("::")[1] for n in _unmarked_spawning_tests(path, set())]
    assert found == ["test_direct", "test_through_a_helper", "test_through_a_fixture"]
    path.write_text("import pytest\npytestmark = pytest.mark.slow\n" + source)
    assert _unmarked_spawning_tests(path, set()) == []
