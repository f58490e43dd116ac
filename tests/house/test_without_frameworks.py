"""The package converts Keras files, loads checkpoints and decomposes with TensorFlow and PyTorch absent."""

import subprocess
import sys

from conftest import ROOT

# Runs in a fresh interpreter where importing tensorflow, tf_keras, keras or torch fails.
SCRIPT = """
import sys
for name in ("tensorflow", "tf_keras", "keras", "torch"):
    sys.modules[name] = None
from ddm_jax.cli import main
out = sys.argv[1]
assert main(["example", "-o", out]) == 0
import numpy as np
from ddm_jax.inference import Decomposer
spectra = np.load(out + "/decomposition.npz")["sf_spectrum"][:1] + 5.0
result = Decomposer.from_checkpoint(out + "/checkpoint")(spectra, [1.0])
assert result["line_ratios"].shape == (1, 3, 8)
assert not any(m in sys.modules and sys.modules[m] is not None for m in ("tensorflow", "tf_keras", "torch"))
print("ok")
"""


def test_example_runs_without_tensorflow_or_torch(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "ok"
    assert "RANDOM" in result.stdout


def test_torch_file_without_torch_says_what_to_install(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    script = ("import sys\nsys.modules['torch'] = None\nfrom ddm_jax.cli import main\n"
              f"sys.exit(main(['convert', {str(tmp_path / 'weights.pt')!r}, {str(tmp_path / 'weights.pt')!r}, "
              f"'-o', {str(tmp_path / 'ckpt')!r}]))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 2 and "ddm-jax[torch]" in result.stderr
    assert not (tmp_path / "ckpt").exists()
