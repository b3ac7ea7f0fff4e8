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


def _record(method: str, seed: int, k: int, rounds: int | None) -> dict:
    """A record with the config keys figures group by and one evaluation per round."""
    config = {
        "method": method,
        "seed": seed,
        "dataset": "d",
        "category": "c",
        "profile": "cpu",
        "input_size": 128,
    }
    config["n_known_anomalies"] = k
    if rounds is not None:
        config["epochs" if method in ("devnet", "dra") else "meta_epochs"] = rounds
    evaluations = [{"meta_epoch": e, "image_auroc": 0.5 + 0.01 * e} for e in range(rounds or 1)]
    return {"config": config, "cell_id": f"{method}-{seed}-{k}", "metrics": {"per_epoch": evaluations}}


def test_figures_keep_schedules_and_known_anomaly_counts_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flows' meta-epochs and DevNet/DRA's epochs get their own curves, k=1 and k=10 never share a
    figure, one-pass methods are reference lines in each and have their maps drawn once."""
    curves: dict[str, list[dict]] = {}
    maps: list[str] = []
    monkeypatch.setattr(
        figures, "metric_curves", lambda recs, title, path, x_label: curves.setdefault(path.name, recs) and []
    )
    monkeypatch.setattr(figures, "loglik_histograms", lambda *args: [])
    monkeypatch.setattr(figures, "map_panels", lambda folder, title, path: maps.append(path.name) or [])
    records = [
        _record("bgad", 0, 1, 4),
        _record("devnet", 0, 1, 10),
        _record("dra", 0, 1, 10),
        _record("padim", 0, 1, None),
        _record("bgad", 0, 10, 4),
    ]
    figures.write_figures(records, tmp_path, tmp_path / "out")
    assert sorted(curves) == [
        "curves-d-c-cpu-128-k1-e4",
        "curves-d-c-cpu-128-k1-ep10",
        "curves-d-c-cpu-128-k10-e4",
    ]
    methods = {name: sorted(r["config"]["method"] for r in recs) for name, recs in curves.items()}
    assert methods["curves-d-c-cpu-128-k1-ep10"] == ["devnet", "dra", "padim"]
    assert methods["curves-d-c-cpu-128-k10-e4"] == ["bgad"]
    assert sorted(m for m in maps if m.endswith("-padim")) == ["maps-d-c-cpu-128-k1-e4-padim"]


def test_metric_curves_tick_whole_rounds_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four meta-epochs on the x axis: ticks at whole rounds (matplotlib's default would put one at 1.5)."""
    drawn: list[plt.Figure] = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or [])
    figures.metric_curves([_record("bgad", 0, 1, 4), _record("bgad", 1, 1, 4)], "t", tmp_path / "c")
    ticks = drawn[0].axes[0].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    plt.close(drawn[0])
