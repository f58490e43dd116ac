"""The house's rules (docs/architecture.md, "The rooms"), checked against the code's import statements:
each room imports only what its "may import" column allows, no modules import each other in a loop,
at most 12 modules sit directly in ddm_jax/, no module is longer than 400 lines, every subpackage is
installed, and importing the package changes no global setting."""

import ast
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict

import pytest

from conftest import ROOT

PACKAGE = ROOT / "ddm_jax"
MAX_FLAT_MODULES = 12
MAX_MODULE_LINES = 400


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or f"ddm_jax.{parts[1]}" in MODULES and not (PACKAGE / parts[1]).is_dir():
        return "ground"
    return parts[1]


def resolve(name: str) -> str | None:
    """The package module an imported name lives in (a module, or the module that defines the name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The ddm_jax modules `module` imports (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {resolve(name) for name in names if name.startswith("ddm_jax")} - {None}
    return found - {module}


def may_import() -> dict[str, set[str]]:
    """The rooms table of docs/architecture.md: room -> the rooms it may import (its own included)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## The rooms", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| [0-9–-]+ \| `?(\w+)`? \| .* \| ([\w, ]+) \|$", section, re.M)
    assert rows, "docs/architecture.md has no rooms table"
    return {room: {r.strip() for r in allowed.split(",")} | {room} for room, allowed in rows}


def test_every_room_is_in_the_table():
    rooms = {room_of(m) for m in MODULES if m != "ddm_jax"}
    assert rooms == set(may_import()), "docs/architecture.md's rooms differ from the package's subpackages"


def test_rooms_import_only_what_the_table_allows():
    table = may_import()
    wrong = []
    for module in sorted(MODULES):
        room = room_of(module)
        for target in sorted(imports(module)):
            # a package's __init__ may re-export its own modules; a module may use its own package
            if target == "ddm_jax" or module.startswith(target + ".") or target.startswith(module + "."):
                continue
            if room_of(target) not in table[room]:
                wrong.append(f"{module} ({room}) imports {target} ({room_of(target)})")
    assert not wrong, "imports the rooms table does not allow:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {m: {t for t in imports(m) if not (m.startswith(t + ".") or t.startswith(m + "."))} for m in MODULES}
    state, cycles = defaultdict(int), []  # 0 unseen, 1 on the path, 2 done

    def visit(module, path):
        state[module] = 1
        for target in sorted(graph[module]):
            if state[target] == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif state[target] == 0:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if state[module] == 0:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_ground_floor_stays_small_and_modules_short():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, f"{len(flat)} modules directly in ddm_jax/: {flat}"
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_decompose_never_enters_prepare():
    reached, todo = set(), ["ddm_jax.commands.decompose"]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(imports(module))
    assert not {m for m in reached if m.startswith("ddm_jax.prepare")}, sorted(reached)


def test_every_subpackage_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {module_name(p.parent) for p in PACKAGE.rglob("__init__.py")}
    assert packages == set(config["packages"]) - {"ddm_jax_convert"}


@pytest.mark.parametrize("flags", ["", "--xla_force_host_platform_device_count=2"])
def test_importing_the_package_changes_no_global_setting(flags):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | ({"XLA_FLAGS": flags} if flags else {})
    code = ("import os, ddm_jax, ddm_jax.inference, ddm_jax.prepare.pipeline, ddm_jax.io.loaders; "
            "print(repr(os.environ.get('XLA_FLAGS')))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == repr(flags or None)


def test_importing_any_module_starts_no_jax_backend():
    """A JAX array made at import starts the backend, and then neither the scheduler setting
    (ddm_jax.runtime) nor jax.distributed.initialize (`decompose --distributed`) can take effect."""
    code = ("import importlib, sys\n"
            f"for name in {sorted(MODULES)!r}: importlib.import_module(name)\n"
            "from ddm_jax.runtime import _jax_started\n"
            "assert 'jax' in sys.modules and not _jax_started(), 'an import started the JAX backend'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_scheduler_setting_is_applied_before_jax_starts_and_said_after():
    code = ("import os, warnings\n"
            "from ddm_jax.runtime import SCHEDULER_FLAG, disable_cpu_concurrent_scheduler\n"
            "assert disable_cpu_concurrent_scheduler() and SCHEDULER_FLAG + '=false' in os.environ['XLA_FLAGS']\n"
            "del os.environ['XLA_FLAGS']\n"
            "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    assert not disable_cpu_concurrent_scheduler()\n"
            "assert 'prepare' in str(caught[0].message) and 'XLA_FLAGS' not in os.environ\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
