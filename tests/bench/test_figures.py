"""Figures: map panels coloured where a pixel scores above a normal one; the same inputs, the same bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bgad.bench import figures


def _cell(folder: Path) -> Path:
    """A cell folder with the map samples of a textured image: every pixel scores near the top (0.90-0.95),
    the defect (a square, in the ground truth) at 1.0; the last image is normal."""
    rng = np.random.default_rng(0)
    maps = rng.uniform(0.90, 0.95, size=(3, 32, 32)).astype(np.float16)
    masks = np.zeros((3, 32, 32), np.uint8)
    for i in (0, 1):
        masks[i, 8:14, 8:14] = 1
        maps[i][masks[i] == 1] = 1.0
    folder.mkdir(parents=True)
    np.savez_compressed(
        folder / "map_samples.npz",
        images=rng.integers(0, 255, size=(3, 32, 32, 3), dtype=np.uint8),
        maps=maps,
        masks=masks,
        labels=np.array([1, 1, 0]),
        scores=np.array([1.0, 1.0, 0.95]),
        paths=np.array(["a.png", "b.png", "c.png"]),
    )
    return folder


def test_map_panels_colour_what_scores_above_the_normal_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scale from 0 paints such a texture red edge to edge; from the normal pixels' median up, the
    defect is coloured and most of the texture is not."""
    drawn: list[plt.Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or [])
    figures.map_panels(_cell(tmp_path / "cell"), "t", tmp_path / "maps")
    fig = drawn[0]
    overlay = fig.axes[2].get_images()[-1]  # row 0: image, ground truth, image + map
    low, high = overlay.norm.vmin, overlay.norm.vmax
    assert 0.92 < low < 0.93 and high == pytest.approx(1.0)
    coloured = ~np.ma.getmaskarray(overlay.get_array())
    assert coloured[8:14, 8:14].all()  # the defect
    assert coloured.mean() < 0.6  # not the texture edge to edge
    label = fig.axes[-1].get_ylabel()  # the colour bar says its scale
    assert f"{low:.3g}" in label and "median normal pixel" in label and f"{high:.3g}" in label
    plt.close(fig)


def test_figures_are_the_same_bytes_when_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No creation date or software version in the files: regenerating unchanged figures changes no
    committed file (the two renderings run at different dates)."""
    cell = _cell(tmp_path / "cell")
    written = []
    for when in ("1700000000", "1800000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", when)  # the date matplotlib would stamp
        written.append(figures.map_panels(cell, "t", tmp_path / when / "maps"))
    first, second = written
    assert [p.suffix for p in first] == [".png", ".pdf"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"Matplotlib" not in first[0].read_bytes()
