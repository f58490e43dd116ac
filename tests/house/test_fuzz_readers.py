"""The short, fixed-seed run of the fuzzer over every reader (tests/fuzzing.py).

It runs in its own process, so that its peak RSS is its own. DDM_FUZZ_SEED picks another seed,
DDM_FUZZ_CASES another count; a failure's seed and mutation are in the assertion message, and
`python tests/fuzzing.py --seed S --cases N --keep-failures DIR` replays it.
"""

import json
import os
import subprocess
import sys

from conftest import ROOT

SEED = int(os.environ.get("DDM_FUZZ_SEED", "14"))
CASES = int(os.environ.get("DDM_FUZZ_CASES", "500"))
BUDGET_S = 100  # the run stops starting cases after this; it takes about 20 s on two busy cores


def test_fuzz_every_reader():
    print(f"fuzzing seed {SEED}, {CASES} cases")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fuzzing.py"), "--seed", str(SEED),
                           "--cases", str(CASES), "--budget-seconds", str(BUDGET_S)],
                          capture_output=True, text=True, timeout=3 * BUDGET_S)
    assert done.stdout.startswith(f"fuzzing seed {SEED}"), done.stderr[-3000:]
    summary = json.loads(done.stdout[done.stdout.index("{"):])
    print(json.dumps({k: summary[k] for k in ("cases", "peak_rss_mib", "seconds", "targets")}))
    assert not summary["failures"], f"seed {SEED}: {json.dumps(summary['failures'], indent=1)}"
    assert done.returncode == 0
    assert summary["cases"] >= min(CASES, 200), f"seed {SEED}: only {summary['cases']} cases in {BUDGET_S} s"
    assert summary["peak_rss_mib"] < 2048
    assert all(set(counts) <= {"ok", "refused"} for counts in summary["targets"].values())
    assert len(summary["targets"]) >= 18  # every reader (19 with PyTorch installed)
