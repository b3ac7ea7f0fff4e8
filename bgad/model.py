"""A trained model that leaves its cell: saved beside the record, loaded to score new images.

``save_model`` writes ``<cell>/model/``: ``model.pt`` (the detector's fitted state: flows, PatchCore
memory bank or PaDiM Gaussians, and the flows' scoring constants) and ``model.json`` (the cell's
configuration, the backbone's identity with its weights' sha256, the feature shapes, and an image
threshold: the F1-best one on the cell's test set). ``TrainedModel.load`` rebuilds the backbone
(refusing other weights than the ones trained on) and the detector; ``predict`` scores image files
exactly as the cell scored its test set, so the cell's own test images get the cell's scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.metrics import precision_recall_curve

from bgad.backbones import FeatureExtractor, create_backbone
from bgad.config import RunConfig
from bgad.features import FeatureCache
from bgad.fileio import atomic_write_text, atomic_write_with
from bgad.scoring import Scores

MODEL_DIR = "model"
MODEL_VERSION = 1


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The image-score threshold with the best F1 on a labelled set (the released code's choice)."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    return float(thresholds[min(int(np.argmax(f1)), len(thresholds) - 1)])


def save_model(
    folder: Path,
    cfg: RunConfig,
    detector,
    extractor: FeatureExtractor,
    shapes,
    scores: Scores,
    labels: np.ndarray,
) -> Path:  # noqa: ANN001
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
        "image_threshold_rule": "best F1 on the cell's test set",
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
        folder = Path(folder)
        model_dir = folder if (folder / "model.json").is_file() else folder / MODEL_DIR
        if not (model_dir / "model.json").is_file():
            raise FileNotFoundError(
                f"no saved model in {folder}: run the cell with --save-model (or `save_model=True`) first"
            )
        meta = json.loads((model_dir / "model.json").read_text())
        settings = {**meta["config"], "device": device, "feature_cache": False}
        if backbone_weights:
            settings["backbone_weights"] = backbone_weights
        cfg = RunConfig.from_dict(settings, source=str(model_dir / "model.json"))
        extractor = create_backbone(
            cfg.backbone, Path(cfg.backbone_weights) if cfg.backbone_weights else None, cfg.random_weights
        )
        saved, now = meta["backbone"]["weights"]["sha256"], extractor.describe()["weights"]["sha256"]
        if saved and now != saved:
            raise ValueError(f"the model was trained on backbone weights {saved}, these are {now}")
        shapes = [tuple(s) for s in meta["feature_shapes"]]
        detector = cfg.spec.build(cfg, shapes, device)
        detector.load_model_state(torch.load(model_dir / "model.pt", map_location=device, weights_only=False))
        return cls(cfg, extractor.to(device), detector, float(meta["image_threshold"]), model_dir)

    def predict(self, images: list[str | Path]) -> Scores:
        """Anomaly maps (at the input size) and image scores of image files."""
        cache = FeatureCache(self.extractor, self.config.input_size, None)
        feats = cache.features([Path(p) for p in images])
        size = (self.config.input_size, self.config.input_size)
        with torch.no_grad():
            return self.detector.score(feats, size)


def write_predictions(
    model: TrainedModel, images: list[Path], out: Path, threshold: float | None = None
) -> pd.DataFrame:
    """Score ``images``; write ``scores.csv`` and one PNG anomaly map per image (plus a mask with a threshold).

    Maps are written as 8-bit PNGs scaled by the largest score of this batch (their shape, not
    their scale, is what a PNG can show); the CSV holds the exact scores.
    """
    scores = model.predict(images)
    out.mkdir(parents=True, exist_ok=True)
    peak = float(scores.maps.max()) or 1.0
    rows = []
    for path, amap, score in zip(images, scores.maps, scores.image_scores, strict=True):
        stem = Path(path).stem
        png = out / f"{stem}_map.png"
        atomic_write_with(
            png,
            lambda tmp, a=amap: Image.fromarray(np.uint8(255 * np.clip(a / peak, 0, 1))).save(
                tmp, format="PNG"
            ),
        )
        row = {"path": str(path), "score": float(score), "map": png.name}
        if threshold is not None:
            row["anomalous"] = bool(score > threshold)
            mask = out / f"{stem}_mask.png"
            atomic_write_with(
                mask,
                lambda tmp, a=amap: Image.fromarray(np.uint8(255 * (a > threshold))).save(tmp, format="PNG"),
            )
            row["mask"] = mask.name
        rows.append(row)
    frame = pd.DataFrame(rows)
    atomic_write_with(out / "scores.csv", lambda tmp: frame.to_csv(tmp, index=False))
    return frame
