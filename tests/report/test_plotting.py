"""Figures render to real PNG files with the expected panels."""

import struct

import numpy as np
import pytest

from ddm_jax.cli import main
from ddm_jax.constants import N_BINS, wavelength_grid
from ddm_jax.errors import DDMError
from ddm_jax.report.plotting import DENSITY_THRESHOLD, DPI, bpt_figure, load_decomposition, save_png, spectrum_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000  # a drawn figure, not an empty canvas


def _fake_output(path, n, seed=0):
    """A small OUT.npz with decompose's keys and shapes."""
    rng = np.random.default_rng(seed)
    sf_fraction = rng.uniform(0, 1, n).astype(np.float32)
    sf = rng.normal(size=(n, N_BINS)).astype(np.float32)
    agn = rng.normal(size=(n, N_BINS)).astype(np.float32)
    ratios = rng.normal(0, 0.4, (n, 3, 8)).astype(np.float32)
    ratios[1, 2, 0] = np.nan  # an undefined [NII] ratio drops galaxy 1 from the [NII] panel only
    np.savez(path, wavelength=wavelength_grid(), sf_spectrum=sf, agn_spectrum=agn, p_sf=sf_fraction,
             p_agn=1 - sf_fraction, p_total=np.ones(n, np.float32), sf_fraction=sf_fraction,
             residual=rng.normal(0, 0.05, (n, N_BINS)).astype(np.float32), line_ratios=ratios,
             bpt_class=np.zeros((n, 3), np.int8))
    return path


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def small(tmp_path):
    return load_decomposition(_fake_output(tmp_path / "out.npz", 5))


def test_spectrum_figure_has_decomposition_residual_and_bpt_panels(small, tmp_path):
    figure = spectrum_figure(small, 2)
    titles = [ax.get_title() for ax in figure.axes]
    assert len(figure.axes) == 3
    assert titles[0].startswith("Galaxy 2: SF fraction") and titles[1].startswith("Residual")
    assert titles[2] == "[NII] BPT"
    assert len(figure.axes[0].get_lines()) == 4  # input, SF part, AGN part, their sum
    assert len(figure.axes[2].collections) == 3  # composite, SF and AGN points
    path = save_png(figure, tmp_path / "spectrum.png")
    width, height = _png_size(path)
    assert (width, height) == (round(figure.get_figwidth() * DPI), round(figure.get_figheight() * DPI))
    assert path.stat().st_size > MIN_PNG_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npz", "spectrum.png"]  # no temporary left


def test_bpt_figure_has_nii_and_sii_panels_with_shifts(small):
    figure = bpt_figure(small)
    assert [ax.get_title() for ax in figure.axes] == ["[NII] BPT (4 galaxies)", "[SII] BPT (5 galaxies)"]
    segments = figure.axes[1].collections[0].get_segments()
    assert len(segments) == 5


def test_many_galaxies_are_drawn_as_a_density(tmp_path):
    out = load_decomposition(_fake_output(tmp_path / "many.npz", DENSITY_THRESHOLD + 50))
    figure = bpt_figure(out)
    kinds = {type(c).__name__ for c in figure.axes[0].collections}
    assert "PolyCollection" in kinds  # hexbin


def test_cli_plot_writes_pngs(tmp_path, capsys):
    source = _fake_output(tmp_path / "out.npz", 4)
    assert main(["plot", str(source), "--index", "1", "--index", "3"]) == 0
    folder = tmp_path / "out_figures"
    assert sorted(p.name for p in folder.iterdir()) == ["bpt.png", "spectrum_1.png", "spectrum_3.png"]
    for path in folder.iterdir():
        _png_size(path)
        assert path.stat().st_size > MIN_PNG_BYTES
    assert "bpt.png" in capsys.readouterr().out


def test_bad_files_are_refused(tmp_path, small):
    np.savez(tmp_path / "bad.npz", wavelength=wavelength_grid())
    with pytest.raises(DDMError, match="lacks"):
        load_decomposition(tmp_path / "bad.npz")
    with pytest.raises(DDMError, match="out of range"):
        spectrum_figure(small, 5)
