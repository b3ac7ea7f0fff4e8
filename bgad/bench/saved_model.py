"""A trained model that leaves its cell: saved beside the record, loaded to score new images.

``save_model`` writes ``<cell>/model/``: ``model.pt`` (the detector's fitted state: flows, PatchCore
memory bank, PaDiM Gaussians, the flows' scoring constants, or DevNet's / DRA's fine-tuned network and
DRA's reference images) and ``model.json`` (the cell's
configuration, the backbone's identity with its weights' sha256, the feature shapes, and an image
threshold: the F1-best one on the cell's test set). ``TrainedModel.load`` rebuilds the backbone
(refusing other weights than the ones trained on) and the detector; ``predict`` scores image files
exactly as the cell scored its test set, so the cell's own test images get the cell's scores.
A saved model that cannot be used (missing, damaged, other weights) raises ``ModelError``, one line
naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import pickle
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import precision_recall_curve

from bgad.backbones import FeatureExtractor
from bgad.bench.config import RunConfig
from bgad.errors import UserError
from bgad.features import FeatureCache
from bgad.fileio import StorageError, atomic_write_text, atomic_write_with, storage_error
from bgad.flow_detector import Detector
from bgad.scoring import Scores

MODEL_DIR = "model"
MODEL_VERSION = 1
#: What to do about a cell folder whose model is missing or damaged: a complete cell is skipped by a
#: rerun, so its folder has to go first.
RESAVE = "remove the cell folder {cell} and run the cell again with --save-model (a complete cell is skipped)"


class ModelError(UserError):
    """A saved model that cannot be loaded or used; the message names the file and the fix."""


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The image-score threshold with the best F1 on a labelled set (the released code's choice).

    The curve's thresholds flag ``score >= t`` while predictions flag ``score > threshold``, so the
    F1-best ``t`` itself would turn the image it was chosen at back to normal. The threshold returned
    lies midway between ``t`` and the next lower score of the set: every image of the set is
    classified as it was when the threshold was chosen, with a margin on both sides.
    """
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    best = float(thresholds[min(int(np.argmax(f1)), len(thresholds) - 1)])
    below = np.asarray(scores)[np.asarray(scores) < best]
    return (best + float(below.max())) / 2 if below.size else float(np.nextafter(best, -np.inf))


def save_model(
    folder: Path,
    cfg: RunConfig,
    detector,
    extractor: FeatureExtractor,
    shapes,
    scores: Scores,
    labels: np.ndarray,
) -> Path:
    """Write ``folder/model/`` for a fitted detector that has scored the cell's test set."""
    target = Path(folder) / MODEL_DIR
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_with(target / "model.pt", lambda tmp: torch.save(detector.model_state(), tmp))
    meta = {
        "model_version": MODEL_VERSION,
        "config": cfg.to_dict(),
        "backbone": extractor.describe(),
        "feature_shapes": [list(s) for s in shapes],
        "image_threshold": f1_threshold(labels, scores.image_scores),
        "image_threshold_rule": "best F1 on the cell's test set, midway to the next lower score",
    }
    atomic_write_text(target / "model.json", json.dumps(meta, indent=1, default=str) + "\n")
    return target


@dataclass
class TrainedModel:
    """A loaded model: configuration, backbone, fitted detector, and the cell's image threshold."""

    config: RunConfig
    extractor: FeatureExtractor
    detector: object
    image_threshold: float
    folder: Path

    @classmethod
    def load(
        cls, folder: str | Path, device: str = "cpu", backbone_weights: str | None = None
    ) -> TrainedModel:
        """From a cell folder (or its ``model/`` folder) written with ``--save-model``."""
        # deferred: bgad.bench.cell saves models through this module (an import cycle at the top)
        from bgad.bench.cell import frozen_backbone, resolve_device

        device = str(resolve_device(device))  # first: a missing GPU is reported before anything loads
        model_dir = find_model_dir(Path(folder))
        meta = _read_meta(model_dir / "model.json")
        settings = {**meta["config"], "device": device, "feature_cache": False}
        if backbone_weights:
            settings["backbone_weights"] = backbone_weights
        cfg = RunConfig.from_dict(settings, source=str(model_dir / "model.json"))
        extractor = frozen_backbone(cfg)
        saved, now = meta["weights_sha256"], extractor.describe()["weights"]["sha256"]
        if saved and now != saved:
            raise ModelError(
                f"the model in {model_dir} was trained on {cfg.backbone} weights with sha256 {saved}, these "
                f"have {now}: give the weights file it was trained on (--backbone-weights PATH)"
            )
        detector = cfg.spec.build(cfg, device)
        _load_state(detector, model_dir / "model.pt", device, meta["feature_shapes"])
        return cls(cfg, extractor.to(device), detector, meta["image_threshold"], model_dir)

    def predict(self, images: list[str | Path]) -> Scores:
        """Anomaly maps (at the model's input size, ``input_size``²) and image scores of image files."""
        cache = FeatureCache(self.extractor, self.config.input_size, None)
        feats = cache.read([Path(p) for p in images], self.config.spec.inputs)
        size = (self.config.input_size, self.config.input_size)
        with torch.no_grad():
            return self.detector.score(feats, size)


def find_model_dir(folder: Path) -> Path:
    """The ``model/`` folder of a cell folder (or ``folder`` itself when it is one); else why not."""
    if not folder.exists():
        raise ModelError(f"--model {folder} does not exist: give the folder of a cell run with --save-model")
    if not folder.is_dir():
        raise ModelError(
            f"--model {folder} is a file: give the cell folder that holds result.json and model/"
        )
    for candidate in (folder, folder / MODEL_DIR):
        if (candidate / "model.json").is_file():
            return candidate
    if (folder / "result.json").is_file():
        raise ModelError(f"the cell {folder} was run without --save-model: {RESAVE.format(cell=folder)}")
    raise ModelError(
        f"--model {folder} holds no saved model (no {MODEL_DIR}/model.json): give the folder of a cell "
        "run with --save-model (<results>/cells/<cell id>)"
    )


def _damaged(path: Path, exc: BaseException) -> ModelError:
    """One line: the file, what went wrong (the first line of torch's or json's message), the fix."""
    detail = (str(exc).strip().splitlines() or [""])[0][:160]
    return ModelError(
        f"cannot read {path} ({type(exc).__name__}: {detail}); the saved model is truncated or damaged: "
        + RESAVE.format(cell=path.parent.parent if path.parent.name == MODEL_DIR else path.parent)
    )


def _read_meta(path: Path) -> dict:
    """What ``load`` needs from ``model.json``: the config, feature shapes, threshold, weights' sha256."""
    try:
        meta = json.loads(path.read_text())
        return {
            "config": dict(meta["config"]),
            "feature_shapes": [tuple(s) for s in meta["feature_shapes"]],
            "image_threshold": float(meta["image_threshold"]),
            "weights_sha256": meta["backbone"]["weights"]["sha256"],
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _damaged(path, exc) from None


def _load_state(detector: Detector, path: Path, device: str, feature_shapes: list[tuple[int, ...]]) -> None:
    """Load ``model.pt`` into ``detector`` for features of ``feature_shapes``; a truncated file or one of
    another model is a ``ModelError``."""
    try:
        detector.load_model_state(torch.load(path, map_location=device, weights_only=False), feature_shapes)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError, KeyError) as exc:
        raise _damaged(path, exc) from None


def output_names(images: list[Path]) -> list[Path]:
    """Each image's output name (no suffix), relative to ``out``: its path below the images' common folder.

    Why: images of one name in different folders (``crack/000.png``, ``good/000.png``) must not write
    over each other's maps. Two images that differ only in their suffix keep it in the name.
    """
    paths = [Path(os.path.abspath(p)) for p in images]
    common = Path(os.path.commonpath([p.parent for p in paths]))
    relative = [p.relative_to(common) for p in paths]
    by_stem: dict[Path, set[Path]] = defaultdict(set)
    for rel in relative:
        by_stem[rel.with_suffix("")].add(rel)
    return [
        rel.with_suffix("")
        if len(by_stem[rel.with_suffix("")]) == 1
        else rel.with_name(rel.name.replace(".", "_"))
        for rel in relative
    ]


def check_out(out: Path) -> None:
    """Refuse an ``out`` that is an existing file before anything is scored."""
    if out.exists() and not out.is_dir():
        raise StorageError(
            f"--out {out} is a file: give a folder for scores.csv and the maps (it is created if missing)"
        )


def write_predictions(
    model: TrainedModel, images: list[Path], out: Path, threshold: float | None = None
) -> pd.DataFrame:
    """Score ``images``; write ``scores.csv`` and one PNG anomaly map per image (plus a mask with a threshold).

    Maps and masks are written at each image's own size, under the image's path below the images'
    common folder (``crack/000_map.png``). Maps are 8-bit PNGs scaled by the largest score of this
    batch (their shape, not their scale, is what a PNG can show); the CSV holds the exact scores.
    """
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(out, exc, "give --out a folder you can write to") from None
    scores = model.predict(images)
    peak = float(scores.maps.max()) or 1.0
    rows = [
        _write_one(out, Path(path), name, amap, float(score), peak, threshold)
        for path, name, amap, score in zip(
            images, output_names(images), scores.maps, scores.image_scores, strict=True
        )
    ]
    frame = pd.DataFrame(rows)
    atomic_write_with(out / "scores.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return frame


def _write_one(
    out: Path, path: Path, name: Path, amap: np.ndarray, score: float, peak: float, threshold: float | None
) -> dict:
    """One image's map (bilinear) and mask (nearest, so it stays binary) at the image's size; its CSV row."""
    with Image.open(path) as img:
        size = img.size  # scoring squash-resized the image, so its map is stretched back the same way
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    scaled = Image.fromarray(np.float32(np.clip(amap / peak, 0, 1))).resize(size, Image.Resampling.BILINEAR)
    png = name.with_name(f"{name.name}_map.png")
    _save_png(out / png, Image.fromarray(np.uint8(np.rint(255 * np.asarray(scaled)))))
    row = {"path": str(path), "score": score, "map": png.as_posix()}
    if threshold is not None:
        mask = name.with_name(f"{name.name}_mask.png")
        binary = Image.fromarray(np.uint8(255 * (amap > threshold))).resize(size, Image.Resampling.NEAREST)
        _save_png(out / mask, binary)
        row.update(anomalous=score > threshold, mask=mask.as_posix())
    return row


def _save_png(path: Path, image: Image.Image) -> None:
    atomic_write_with(path, lambda tmp: image.save(tmp, format="PNG"))
