"""`ddm-jax report`: one self-contained HTML page per decompose run, checked as text and in a real
headless browser (Debian's chromium and chromedriver through selenium; nothing is downloaded)."""

import base64
import html.parser
import importlib.util
import re
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_DDM_KERAS, TINY_REGRESSOR_KERAS, random_spectra
from ddm_jax.constants import N_BINS, wavelength_grid
from ddm_jax.errors import DDMError
from ddm_jax.report.html import DENSITY_THRESHOLD, SHIFT_SAMPLE, default_report_path, render_report, write_report

COUNT, BATCH = 10, 8
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                  "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The tiny network's decompose outputs of COUNT spectra: an OUT.npz, an output folder and a FITS catalogue."""
    from ddm_jax.inference.decomposer import Decomposer
    from ddm_jax.inference.streaming import decompose_files
    from ddm_jax.io.checkpoint import convert_to_checkpoint
    from ddm_jax.io.outputs.files import open_output
    from ddm_jax.io.outputs.fits_writer import write_fits

    root = tmp_path_factory.mktemp("report")
    convert_to_checkpoint([TINY_DDM_KERAS, TINY_REGRESSOR_KERAS], root / "ckpt")
    np.save(root / "spectra.npy", random_spectra(COUNT, seed=61))
    np.save(root / "mass.npy", np.linspace(0.5, 2.0, COUNT))
    decomposer = Decomposer.from_checkpoint(root / "ckpt", batch_size=BATCH)
    outputs = {kind: decompose_files(decomposer, root / "spectra.npy", root / "mass.npy", root / name)
               for kind, name in (("npz", "out.npz"), ("folder", "out_dir"))}
    with open_output(outputs["npz"]) as reader:
        outputs["fits"] = write_fits(root / "out.fits", reader)
    return outputs


class FakeReader:
    """`catalog.open_output`'s interface over arrays in memory; records every read."""

    def __init__(self, arrays, provenance=None):
        self.arrays, self.provenance, self.reads = arrays, provenance or {}, []
        self.keys = tuple(arrays)
        self.rows = len(arrays["sf_fraction"])
        self.wavelength = wavelength_grid()

    def shape(self, key):
        return self.arrays[key].shape

    def read(self, key, start=0, stop=None):
        self.reads.append((key, start, self.rows if stop is None else stop))
        return self.arrays[key][start:stop]


def fake_run(rows, seed=0, calibrated=True, spectra=True):
    """Arrays shaped as decompose's outputs of a PREPARED input, with trust scores and gate flags."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, rows).astype(np.float32)
    arrays = {"sf_fraction": w, "p_sf": w, "p_agn": 1 - w, "line_ratios": rng.normal(0, 0.4, (rows, 3, 8)),
              "bpt_class": rng.integers(-1, 4, (rows, 3)).astype(np.int8),
              "ids": np.array([f"galaxy-{i}" for i in range(rows)]), "z": rng.uniform(0, 0.2, rows),
              "reconstruction_chi2": rng.lognormal(0, 0.5, rows).astype(np.float32),
              "ood_score": (rng.lognormal(-0.5, 0.5, rows) if calibrated else np.full(rows, np.nan)).astype(np.float32),
              "passes_gate": rng.uniform(size=rows) < 0.8, "broad_balmer": rng.uniform(size=rows) < 0.1}
    arrays["trusted"] = (arrays["ood_score"] < 1) & (arrays["reconstruction_chi2"] < 2)
    if spectra:
        arrays.update({key: rng.normal(size=(rows, N_BINS)).astype(np.float32)
                       for key in ("sf_spectrum", "agn_spectrum", "residual")})
    return arrays


class PageParser(html.parser.HTMLParser):
    """The tags and attributes of a page, and its visible text."""

    def __init__(self, page):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def resource_urls(page):
    return [attrs[name] for _, attrs in PageParser(page).tags for name in ("src", "href") if name in attrs]


def spectrum_sections(page):
    return [attrs for tag, attrs in PageParser(page).tags if tag == "section" and attrs.get("class") == "spectrum"]


# The page as text.

@pytest.mark.parametrize("kind", ["npz", "folder", "fits"])
def test_report_of_a_decompose_output(outputs, kind, tmp_path):
    path = write_report(outputs[kind], tmp_path / "report.html", n_spectra=5)
    page = path.read_text()
    assert len(spectrum_sections(page)) == 5
    for anchor in ("provenance", "classes", "bpt", "sf-fraction", "trust", "spectra"):
        assert f'<section id="{anchor}">' in page
    assert "no trust calibration" in page  # the tiny converted checkpoint has none
    assert page.count("data:image/png;base64,") == 1 + 1 + 5  # BPT, SF fraction, the five spectra
    assert all(url.startswith(("data:image/png;base64,", "#")) for url in resource_urls(page))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary file left


def test_default_path_and_spectra_count_capped_by_rows(outputs):
    path = write_report(outputs["npz"], n_spectra=100)
    assert path == outputs["npz"].with_name("out_report.html") == default_report_path(outputs["npz"])
    assert len(spectrum_sections(path.read_text())) == COUNT
    assert default_report_path(outputs["folder"]).name == "out_dir_report.html"


def test_strings_from_the_file_are_escaped_and_fetch_nothing():
    arrays = fake_run(3)
    arrays["ids"] = np.array(['<script>alert(1)</script>', '<img src="https://example.com/x.png">', "$x_1$ & $"])
    provenance = {"input": '<a href="http://example.com">x</a>', "bpt_scheme": "standard"}
    page = render_report(FakeReader(arrays, provenance), "run.npz", 3, "<b>title</b>")
    assert "<script" not in page and "<b>title" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "$x_1$ &amp; $" in page
    assert not [url for url in resource_urls(page) if "://" in url]
    assert "bpt_scheme" in page and "standard" in page


def test_trust_flags_gate_and_per_spectrum_facts():
    arrays = fake_run(40)
    page = render_report(FakeReader(arrays), "run.npz", 2, "run")
    text = " ".join(PageParser(page).text)
    trusted = int(arrays["trusted"].sum())
    assert f"{trusted} ({100 * trusted / 40:.1f} %)" in text
    assert "passes_gate" in text and "broad_balmer" in text and "no trust calibration" not in text
    assert page.count("data:image/png;base64,") == 1 + 1 + 1 + 2  # BPT, SF fraction, trust scores, 2 spectra
    assert "row 1: galaxy-1" in text and f"{arrays['z'][1]:.5f}" in text
    assert "[NII]-BPT class, AGN part" in text and "[NII]-BPT class, input spectrum" in text


def test_uncalibrated_checkpoint_is_said_plainly():
    page = render_report(FakeReader(fake_run(10, calibrated=False)), "run.npz", 0, "run")
    assert "The checkpoint had no trust calibration" in page
    assert "No per-spectrum sections were asked for" in page and not spectrum_sections(page)


def test_large_survey_reads_only_the_first_spectra():
    rows, shown = 3 * DENSITY_THRESHOLD, 3
    reader = FakeReader(fake_run(rows))
    started = time.perf_counter()
    page = render_report(reader, "survey", shown, "survey")
    print(f"report of {rows} rows: {time.perf_counter() - started:.1f} s")
    spectra_reads = [(key, stop) for key, _, stop in reader.reads if key.endswith(("_spectrum", "residual"))]
    assert spectra_reads and max(stop for _, stop in spectra_reads) == shown
    assert f"random sample of {SHIFT_SAMPLE}" in page and len(spectrum_sections(page)) == shown


def test_a_survey_just_above_the_density_threshold():
    rows = DENSITY_THRESHOLD + 1  # fewer spectra than the shift sample: all of their shifts are drawn
    page = render_report(FakeReader(fake_run(rows)), "survey", 0, "survey")
    assert f"random sample of {rows}" in page


def test_catalogue_without_spectra_still_reports():
    page = render_report(FakeReader(fake_run(5, spectra=False)), "cat.fits", 2, "cat")
    assert "no decomposition figures" in page and len(spectrum_sections(page)) == 2


def test_failed_write_keeps_the_old_page(outputs, tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    target.write_text("old page")
    with pytest.raises(DDMError):
        write_report(tmp_path / "missing.npz", target)
    monkeypatch.setattr("ddm_jax.io.safe.os.replace", lambda *_: (_ for _ in ()).throw(OSError(28, "No space left")))
    with pytest.raises(DDMError, match="cannot write"):
        write_report(outputs["npz"], target, n_spectra=0)
    assert target.read_text() == "old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_cli_report(outputs, tmp_path, capsys):
    from ddm_jax.cli import main

    assert main(["report", str(outputs["npz"]), "-o", str(tmp_path / "r.html"), "--spectra", "0",
                 "--title", "My run"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "<title>My run</title>" in page and not spectrum_sections(page)
    assert str(tmp_path / "r.html") in capsys.readouterr().out
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert main(["report", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "bad.html")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ddm-jax report: error:") and error.count("\n") == 1
    assert not (tmp_path / "bad.html").exists()
    before = outputs["npz"].read_bytes()
    assert main(["report", str(outputs["npz"]), "-o", str(outputs["npz"])]) == 2
    assert "is the output being reported on" in capsys.readouterr().err and outputs["npz"].read_bytes() == before


# The page in a real browser.

def browser(tmp_path):
    """Headless Debian chromium through selenium and the chromedriver beside it (never selenium-manager)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package")
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)} (CI installs them: .ci/run)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


def rendering_problems(driver, path):
    """What keeps the page at `path` from rendering cleanly: console errors and warnings, broken images."""
    driver.get(path.resolve().as_uri())
    problems = [f"console {entry['level']}: {entry['message']}" for entry in driver.get_log("browser")
                if entry["level"] in ("SEVERE", "WARNING")]
    images = driver.execute_script(
        "return Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth]);")
    problems += [f"image {alt!r} not rendered" for alt, complete, width in images if not (complete and width > 0)]
    return problems, len(images)


def test_page_renders_in_a_headless_browser(outputs, tmp_path):
    path = write_report(outputs["folder"], tmp_path / "report.html", n_spectra=4)
    started = time.perf_counter()
    driver = browser(tmp_path)
    try:
        problems, images = rendering_problems(driver, path)
        sections = driver.find_elements("css selector", "section.spectrum")
        provenance = driver.find_element("id", "provenance").text
        broken = tmp_path / "broken.html"
        broken.write_text(re.sub(r"base64,[A-Za-z0-9+/]{40}", "base64," + base64.b64encode(b"no png").decode(),
                                 path.read_text(), count=1))
        broken_problems, _ = rendering_problems(driver, broken)
    finally:
        driver.quit()
    print(f"browser check: {time.perf_counter() - started:.1f} s")
    assert problems == [] and images == 1 + 1 + 4
    assert len(sections) == 4
    assert str(outputs["folder"]) in provenance and "ddm_jax_version" in provenance
    assert broken_problems == ["image 'BPT diagrams' not rendered"]  # the check can fail
