"""docs/tutorial.ipynb: committed without outputs, and it runs from top to bottom.

The notebook is committed stripped (no outputs, execution counts null, no cell metadata). After editing it in
Jupyter, strip it with

    python tests/house/test_tutorial.py --strip

`test_tutorial_runs` executes it in a fresh kernel (the SDSS spectra come with ppxf; the demo checkpoint is trained
the first time into the default cache ~/.cache/ddm-jax/demo, about 2.5 minutes on 2 cores, then loaded).
"""

import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "tutorial.ipynb"  # also run as a script: no conftest
EXPECTED_FILES = ("prepared.fits", "decomposed.fits", "report.html")


def strip(nb) -> None:
    """Remove outputs, execution counts and metadata noise (widgets, timings, collapsed/scrolled flags, the Python
    version in language_info) in place."""
    nb.metadata = {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}  # no versions
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def test_tutorial_has_no_outputs():
    nbformat = pytest.importorskip("nbformat", reason="reading the notebook needs nbformat (the test extra)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert dict(nb.metadata) == {"kernelspec": nb.metadata["kernelspec"], "language_info": {"name": "python"}}, (
        f"notebook metadata beyond the kernel spec: {dict(nb.metadata)}; python tests/house/test_tutorial.py --strip")
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "the tutorial has no code cells"
    fix = "strip it: python tests/house/test_tutorial.py --strip"
    for cell in nb.cells:
        where = f"cell {cell.get('id')} ({cell.source.splitlines()[0][:60]!r})"
        assert not cell.metadata, f"{where}: has metadata {dict(cell.metadata)}; {fix}"
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{where}: has outputs; {fix}"
            assert cell.execution_count is None, f"{where}: has an execution count; {fix}"


def test_tutorial_runs(tmp_path, tmp_path_factory, monkeypatch):
    for module in ("nbformat", "nbclient", "ipykernel", "ppxf", "specutils"):
        pytest.importorskip(module, reason=f"running the tutorial needs {module}: pip install -e '.[test]'")
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    # The kernel must run this interpreter (sys.executable), whatever kernel specs the machine has (a user's own
    # "python3" in ~/.local/share/jupyter would otherwise win): write a "python3" spec whose argv is sys.executable
    # into a folder of our own and give the client a kernel manager that looks only there.
    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(kernels / "python3")
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    assert manager.kernel_spec.argv[0] == sys.executable

    monkeypatch.setenv("DDM_TUTORIAL_DIR", str(tmp_path))  # the kernel inherits this environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # allow_errors: every cell runs, and the assertion below names each one that failed
    client = NotebookClient(nb, km=manager, timeout=900, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [f"{output.ename}: {output.evalue}" for output in outputs if output.output_type == "error"]
    assert not errors, errors
    for name in EXPECTED_FILES:
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, f"the tutorial wrote no {name}"
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) >= 4, f"expected the tutorial's figures as image/png outputs, found {len(figures)}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--strip"]:
        sys.exit("usage: python tests/house/test_tutorial.py --strip   (strips docs/tutorial.ipynb's outputs in place)")
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    strip(notebook)
    nbformat.validate(notebook)
    nbformat.write(notebook, NOTEBOOK)
    print(f"stripped {NOTEBOOK}")
