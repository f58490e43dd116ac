"""The README and the documentation site (mkdocs.yml, docs/).

- every module of the package and of `ddm_jax_convert` has a `::: module` block in docs/api/*.md, and
  every block names a module that exists;
- every public function, class or module named in docs/architecture.md is rendered in the API reference;
- the README stays short, keeps the two commands and links only to files (and headings) that exist;
- the README's Python example runs, as typed, beside a converted checkpoint and two .npy files;
- `mkdocs build --strict` succeeds and the built API pages hold an anchor for every name above.

The module index is read from the source with `ast` (nothing is imported), so these checks run without
the frameworks; the build needs the docs extra (in the test extra): pip install -e '.[docs]'.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
API = DOCS / "api"
ARCHITECTURE = DOCS / "architecture.md"
# Where each importable package's source lives (setuptools' package-dir in pyproject.toml).
SOURCES = {"ddm_jax": ROOT / "ddm_jax", "ddm_jax_convert": ROOT / "convert"}
MAX_README_LINES = 200
COMMANDS = (
    "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/ddm-jax demo -o demo_output",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/ruff check . "
    "&& .venv/bin/python -m pytest -q",
)
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED = re.compile(rf"{IDENTIFIER}(?:\.{IDENTIFIER})*")


# ---------------------------------------------------------------------------------------------------------
# A static index of the package: what each module defines and imports (read with ast, never imported).


@dataclass
class Module:
    name: str
    path: Path
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    aliases: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (module, attr or None)
    all: list[str] | None = None  # __all__, where the module defines one


def _module_name(package: str, root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if module.path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _read(module: Module) -> Module:
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module.defs[node.name] = node
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                module.aliases[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    module.aliases[alias.asname] = (alias.name, None)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            module.all = [elt.value for elt in node.value.elts if isinstance(elt, ast.Constant)]
    return module


@functools.cache
def package_modules() -> dict[str, Module]:
    modules = {}
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts or not (path.parent / "__init__.py").exists():
                continue  # scripts beside the package (none today), not importable modules
            name = _module_name(package, root, path)
            modules[name] = _read(Module(name, path))
    return modules


@dataclass(frozen=True)
class Target:
    """A resolved name: the module that defines it and its path inside that module ("" for a module)."""

    module: str
    qualname: str
    kind: str  # "module", "function", "class"

    @property
    def path(self) -> str:
        return f"{self.module}.{self.qualname}" if self.qualname else self.module


def _kind(node: ast.AST) -> str:
    return "class" if isinstance(node, ast.ClassDef) else "function"


def resolve_in(module_name: str, parts: list[str], depth: int = 0) -> Target | None:
    """`parts` looked up inside module `module_name`, following imports; None if it is not a module,
    function, class or method defined in the package."""
    modules = package_modules()
    if depth > 20 or module_name not in modules:
        return None
    if not parts:
        return Target(module_name, "", "module")
    module, head, rest = modules[module_name], parts[0], parts[1:]
    if f"{module_name}.{head}" in modules:
        return resolve_in(f"{module_name}.{head}", rest, depth + 1)
    if head in module.defs:
        node, qualname = module.defs[head], [head]
        for part in rest:
            members = {n.name: n for n in getattr(node, "body", [])
                       if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
            if not isinstance(node, ast.ClassDef) or part not in members:
                return None  # an attribute, or a member inherited from outside the package
            node = members[part]
            qualname.append(part)
        return Target(module_name, ".".join(qualname), _kind(node))
    if head in module.aliases:
        source, attr = module.aliases[head]
        return resolve_in(source, ([attr] if attr else []) + rest, depth + 1)
    return None


def resolve(name: str) -> tuple[list[Target], bool]:
    """The package objects a name in the docs may mean, and whether it was fully qualified.

    A fully qualified name (`ddm_jax.io.outputs.files.open_output`) means one object. Otherwise the name
    is taken relative to every module whose dotted name ends with its first parts (`outputs.files.open_output`,
    `inference.Decomposer`, `prepare.fit`), and as a function or class that some module defines
    (`open_output`, `Decomposer.from_checkpoint`)."""
    parts = name.split(".")
    if parts[0] in SOURCES:
        target = resolve_in(parts[0], parts[1:])
        return ([target] if target else []), True
    found = []
    for module_name, module in package_modules().items():
        pieces = module_name.split(".")
        for cut in range(1, len(parts) + 1):
            if pieces[-cut:] == parts[:cut]:
                target = resolve_in(module_name, parts[cut:])
                if target:
                    found.append(target)
        if parts[0] in module.defs:
            target = resolve_in(module_name, parts)
            if target:
                found.append(target)
    return sorted(set(found), key=lambda t: t.path), False


def is_public(target: Target) -> bool:
    """What mkdocstrings renders with this project's filters (names not starting with '_'), inside a
    module's __all__ where it has one."""
    if any(part.startswith("_") for part in target.path.split(".")):
        return False
    exported = package_modules()[target.module].all
    return not (target.qualname and exported is not None and target.qualname.split(".")[0] not in exported)


# ---------------------------------------------------------------------------------------------------------
# What the docs say.


def rendered_modules() -> dict[str, Path]:
    """Every `::: identifier` block of docs/api/*.md: identifier -> page."""
    blocks = {}
    for page in sorted(API.glob("*.md")):
        for match in re.finditer(r"^:::\s+(\S+)\s*$", page.read_text(encoding="utf-8"), re.M):
            name = match.group(1)
            assert name not in blocks, f"{name} is rendered twice ({blocks.get(name)}, {page})"
            blocks[name] = page
    return blocks


def architecture_names(text: str) -> set[str]:
    """The dotted names of docs/architecture.md: each backticked span's, and those of its diagrams."""
    names = set()
    code_blocks = re.findall(r"^```.*?^```", text, re.M | re.S)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        span = span.strip()
        if re.fullmatch(r"[\w/]+\.py", span) or re.fullmatch(r"[\w]+(/[\w]+)+/?", span):  # a file path
            span = span.removesuffix(".py").removesuffix("/__init__").strip("/").replace("/", ".")
        names.update(m.group(0) for m in DOTTED.finditer(span))
    for block in code_blocks:
        names.update(m.group(0) for m in DOTTED.finditer(block) if "." in m.group(0))
    return names


def architecture_targets() -> tuple[dict[str, list[Target]], list[str]]:
    """Names of docs/architecture.md that mean package objects (-> their targets), and fully qualified
    names that resolve to nothing."""
    resolved, broken = {}, []
    for name in sorted(architecture_names(ARCHITECTURE.read_text(encoding="utf-8"))):
        targets, qualified = resolve(name)
        if targets:
            resolved[name] = targets
        elif qualified:
            broken.append(name)
    return resolved, broken


def slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs uses; GitHub's agrees on these headings)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(markdown: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", markdown.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def readme_links() -> list[str]:
    text = re.sub(r"^```.*?^```", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def readme_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
    assert blocks, "README.md has no ```python example"
    return blocks[0]


# ---------------------------------------------------------------------------------------------------------
# The tests.


def test_every_module_has_an_api_block():
    modules, blocks = set(package_modules()), set(rendered_modules())
    assert len(modules) > 50, f"only {len(modules)} modules found under {list(SOURCES.values())}"
    missing, stale = sorted(modules - blocks), sorted(blocks - modules)
    assert not missing, f"modules without a '::: module' block in docs/api/*.md: {missing}"
    assert not stale, f"'::: name' blocks in docs/api/*.md naming no module of the package: {stale}"


def test_architecture_names_are_in_the_api_reference():
    resolved, broken = architecture_targets()
    assert not broken, f"docs/architecture.md names objects that do not exist: {broken}"
    # Enough names resolve that a broken extraction cannot pass unnoticed.
    assert len(resolved) >= 20, f"only {len(resolved)} names of docs/architecture.md resolved: {sorted(resolved)}"
    blocks = rendered_modules()
    missing = {}
    for name, targets in resolved.items():
        if not any(t.module in blocks and is_public(t) for t in targets):
            missing[name] = [t.path for t in targets]
    assert not missing, ("names in docs/architecture.md that the API reference does not render (a private "
                         f"name, or a module without a '::: module' block in docs/api/): {missing}")


def test_name_resolution_can_fail():
    """The rules the test above relies on: qualified, relative and bare names; private ones are not public."""
    (target,), qualified = resolve("ddm_jax.inference.Decomposer.from_checkpoint")
    assert qualified and target == Target("ddm_jax.inference.decomposer", "Decomposer.from_checkpoint", "function")
    assert resolve("ddm_jax.no_such_module.thing") == ([], True)
    assert Target("ddm_jax.io.outputs.files", "open_output", "function") in resolve("open_output")[0]
    assert Target("ddm_jax.prepare.fit", "", "module") in resolve("prepare.fit")[0]
    assert resolve("trusted") == ([], False)  # an output key, not an object
    assert not is_public(Target("ddm_jax.batching", "_private", "function"))


def test_readme_is_short_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; at most {MAX_README_LINES}"
    stripped = {line.strip() for line in lines}
    for command in COMMANDS:
        assert command in stripped, f"README.md lost the command line:\n    {command}"


def test_readme_links_resolve():
    links = readme_links()
    assert any(link.startswith("docs/") for link in links), "README.md links to no page of docs/"
    broken = []
    for link in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        path = README if not target else (README.parent / target)
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{link}: no heading with that anchor in {target or 'README.md'}")
    assert not broken, f"README.md's broken links: {broken}"


def test_readme_python_example_runs(tmp_path):
    """The example as a user with the released weights types it; here the checkpoint is the bundled tiny
    Keras files converted, the spectra the bundled example spectra."""
    import numpy as np

    from ddm_jax.io.checkpoint import convert_to_checkpoint

    code = readme_example()
    assert len(code.splitlines()) <= 20, "the README's example should stay about 15 lines"
    data = ROOT / "ddm_jax" / "data"
    convert_to_checkpoint([data / "tiny_ddm_keras.hdf5", data / "tiny_regressor_keras.hdf5"],
                          tmp_path / "weights" / "ddm-jax-checkpoint")
    with np.load(data / "example_spectra.npz") as examples:
        np.save(tmp_path / "SPECTRA.npy", examples["flux"])
        np.save(tmp_path / "MASS.npy", examples["mass"])
        rows = len(examples["flux"])
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"the README's example failed:\n{done.stdout}\n{done.stderr}"
    assert "sf_fraction" in done.stdout and len(done.stdout.strip().splitlines()) >= rows, done.stdout
    if "OUT.fits" in code:
        assert (tmp_path / "OUT.fits").stat().st_size > 0


def test_site_builds_strict(tmp_path):
    for module in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module, reason=f"building the docs needs {module}: pip install -e '.[docs]' "
                                           "(the test extra has it)")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    html = "\n".join(page.read_text(encoding="utf-8") for page in (site / "api").rglob("*.html"))
    ids = set(re.findall(r'id="([^"]+)"', html))
    missing_modules = sorted(set(rendered_modules()) - ids)
    assert not missing_modules, f"'::: module' blocks that rendered no heading: {missing_modules}"
    resolved, _ = architecture_targets()
    missing = {name: [t.path for t in targets] for name, targets in resolved.items()
               if not any(t.path in ids for t in targets)}
    assert not missing, f"names of docs/architecture.md with no anchor in the built API reference: {missing}"
