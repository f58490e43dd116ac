"""Smoke test of the benchmark command (`python -m benchmarks.run`): files and fields, no timings.

The command's `main` runs in this process on the least it can measure (tiny networks, batch 1,
one timed round, no time budget): the code `--quick` runs, without starting a second Python.
PyTorch eager joins where torch is installed (environment() imports torch then anyway), so the
benchmark's torch pipeline is checked against JAX's on the same weights."""

import importlib.util
import json

from benchmarks.run import main, paired_speedup


def test_quick_benchmark_writes_json_markdown_and_plot(tmp_path, capsys):
    frameworks = ["jax-float32"] + (["torch-eager"] if importlib.util.find_spec("torch") else [])
    assert main(["--quick", "--batch-sizes", "1", "--min-rounds", "1", "--max-rounds", "1", "--budget", "0",
                 "--out", str(tmp_path), "--name", "smoke", "--frameworks", *frameworks]) == 0
    assert f"wrote {tmp_path / 'smoke.json'}" in capsys.readouterr().out

    report = json.loads((tmp_path / "smoke.json").read_text())
    env = report["environment"]
    for field in ("date", "cpu", "cpu_count", "versions", "xla_flags", "load_average_start", "load_average_end"):
        assert field in env, field
    assert "jax" in env["versions"]
    assert report["preset"] == "tiny" and report["batch_sizes"] == [1]
    assert report["matmul_roofline_gflops"]["float32_peak"] > 0
    assert set(report["flops_per_spectrum"]) == {"ddm", "pipeline"}
    cells = {(r["workload"], r["framework"]): r for r in report["results"]}
    assert set(cells) == {(w, f) for w in ("ddm", "pipeline") for f in frameworks}
    for (workload, framework), cell in cells.items():
        assert cell["batch"] == 1 and cell["dtype"] == "float32"
        assert len(cell["times_s"]) == 1 and cell["spectra_per_s"] > 0
        for field in ("median_s", "min_s", "gflops_per_s", "roofline_fraction", "rss_peak_increase_mb",
                      "first_call_s", "ratio_to_keras"):
            assert field in cell, (workload, framework, field)
    assert cells[("pipeline", "jax-float32")]["xla_buffers_mb"] > 0
    if "torch-eager" in frameworks:  # the same weights and inputs: the outputs agree
        deviation = cells[("pipeline", "torch-eager")]["deviation_from_jax_float32"]
        assert deviation["line_ratios"]["max_rel"] < 1e-3
        assert deviation["bpt_class"]["mismatch_fraction"] == 0.0

    table = (tmp_path / "smoke.md").read_text()
    assert "## ddm: spectra/s" in table and "## pipeline: spectra/s" in table and "jax-float32" in table
    assert "## pipeline: paired speed-up of JAX float32" in table
    for workload in ("ddm", "pipeline"):
        for section in ("paired speed-up of JAX float32", "GFLOP/s", "deviation from JAX float32 at batch 1"):
            assert f"## {workload}: {section}" in table, (workload, section)
    assert "## Failures" not in table
    # matplotlib is a dependency of the package, and main() always writes the plot
    assert (tmp_path / "smoke.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smoke.json", "smoke.md", "smoke.png"]  # no temporaries


def test_paired_speedup_is_the_median_of_same_round_ratios():
    # the same-round ratios are 2, 6, 2: median 2 (the ratio of the medians, 6.0 / 1.0, would say 6)
    ours, theirs = {"times_s": [1.0, 1.0, 3.0]}, {"times_s": [2.0, 6.0, 6.0]}
    assert paired_speedup(ours, theirs) == 2.0
    assert paired_speedup(ours, {"times_s": [1.0]}) is None and paired_speedup({}, theirs) is None
