"""The anomalib side of the peer check (``benchmarks/anomalib_peer.py``): anomalib's PatchCore and PaDiM
on the folders the spec names, raw image scores, scikit-learn's AUROC.

Runs in a second virtualenv that has anomalib and not ``bgad``, started by the peer check from the
repository root as ``<anomalib python> -m benchmarks.anomalib_worker SPEC.json``: it imports nothing
from ``bgad`` (nor does ``benchmarks/__init__.py``). Not importable in our own virtualenv.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import anomalib
import numpy as np
import timm
import torch
from anomalib.data import Folder
from anomalib.engine import Engine
from anomalib.models import Padim, Patchcore
from anomalib.pre_processing import PreProcessor
from lightning.pytorch import seed_everything
from sklearn.metrics import roc_auc_score
from torchvision.transforms.v2 import Compose, Normalize, Resize

# bgad.backbones' IMAGENET_MEAN and IMAGENET_STD, written again: this side cannot import bgad.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _NoGradFit(Patchcore):
    """Lightning calls ``fit`` (the coreset) from ``on_train_epoch_end`` with autograd enabled; there
    anomalib 2.7's ``KCenterGreedy`` keeps one bank-sized tensor alive per selected point (RSS grew
    past 23 GB and the kernel killed it at step 1647 of 1867 on 18,688 patches). Run it as inference."""

    def fit(self) -> None:
        with torch.no_grad():
            super().fit()


def model(name: str, size: int) -> Patchcore | Padim:
    """anomalib's model with the Lite0 backbone, our settings, and its post-processing off (raw scores)."""
    pre = PreProcessor(
        transform=Compose([Resize((size, size), antialias=True), Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    )
    common = {
        "backbone": "tf_efficientnet_lite0",
        "pre_trained": True,
        "pre_processor": pre,
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
    }
    if name == "patchcore":
        return _NoGradFit(layers=[2, 3], coreset_sampling_ratio=0.1, num_neighbors=9, **common)
    return Padim(layers=[1, 2, 3], n_features=100, **common)


def datamodule(root: Path, seed: int) -> Folder:
    """The category folder as anomalib's ``Folder``, without its default validation split of the test set."""
    data = Folder(
        name="brainmri",
        root=root,
        normal_dir="train/good",
        normal_test_dir="test/good",
        abnormal_dir="test/defect",
        train_batch_size=32,
        eval_batch_size=32,
        num_workers=0,
        test_split_mode="from_dir",
        val_split_mode="none",
        seed=seed,
    )
    data.setup()
    return data


def fit_with_engine(m: Patchcore | Padim, data: Folder, work: Path) -> tuple[list, float]:
    """Lightning's Engine: (predictions, the clock when the fit ended). With ``val_split_mode=none``,
    ``Engine.fit(datamodule=...)`` asks for a val_dataloader and fails ('Folder' object has no attribute
    'val_data'): the loaders are passed instead."""
    engine = Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        default_root_dir=str(work),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    engine.fit(model=m, train_dataloaders=data.train_dataloader())
    fitted = time.perf_counter()
    return engine.predict(model=m, dataloaders=data.test_dataloader()), fitted


@torch.no_grad()
def fit_by_hand(m: Patchcore | Padim, data: Folder) -> tuple[list, float]:
    """anomalib's own pre-processor, torch model and fit (coreset / Gaussian) without Lightning's loop
    (there the PatchCore coreset step is killed for memory, see ``_NoGradFit``): (predictions, the clock
    when the fit ended)."""
    transform, torch_model = m.pre_processor.transform, m.model
    torch_model.train()
    for batch in data.train_dataloader():
        torch_model(transform(batch.image))
    m.fit()
    fitted = time.perf_counter()
    torch_model.eval()
    predictions = []
    for batch in data.test_dataloader():
        out = torch_model(transform(batch.image))
        predictions.append(batch.update(pred_score=out.pred_score, anomaly_map=out.anomaly_map))
    return predictions, fitted


def run_one(run: dict, size: int, engine: bool) -> dict:
    """One model on one seed's folder: AUROC, times (from the model's construction), and every test
    file's label and score."""
    seed_everything(run["seed"], workers=True)
    t0 = time.perf_counter()
    m = model(run["model"], size)
    root = Path(run["root"])
    data = datamodule(root, run["seed"])
    if engine:
        predictions, fitted = fit_with_engine(m, data, root.parent / f"engine-{run['model']}-{run['seed']}")
    else:
        predictions, fitted = fit_by_hand(m, data)
    t_fit, t_total = fitted - t0, time.perf_counter() - t0
    paths, labels, scores = [], [], []
    for batch in predictions:
        paths += [str(Path(p).relative_to(root)) for p in batch.image_path]
        labels += [int(v) for v in batch.gt_label.reshape(-1).tolist()]
        scores += [float(v) for v in batch.pred_score.reshape(-1).tolist()]
    return {
        **run,
        "image_auroc": float(roc_auc_score(np.array(labels), np.array(scores))),
        "fit_s": t_fit,
        "total_s": t_total,
        "n_train": len(data.train_data),
        "n_test": len(paths),
        "n_val": len(data.val_data) if hasattr(data, "val_data") else 0,
        "paths": paths,
        "labels": labels,
        "scores": scores,
    }


def worker(spec_path: Path) -> int:
    """Every run of the spec; writes the results and the versions to the spec's ``out`` file."""
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec["threads"])
    results = []
    for run in spec["runs"]:
        r = run_one(run, spec["input_size"], bool(spec.get("engine")))
        results.append(r)
        print(
            f"anomalib {r['model']} seed {r['seed']}: AUROC {r['image_auroc']:.4f}, "
            f"{r['total_s']:.1f} s (train {r['n_train']}, test {r['n_test']})",
            flush=True,
        )
    versions = {
        "anomalib": anomalib.__version__,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
    }
    Path(spec["out"]).write_text(json.dumps({"results": results, "versions": versions}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[1])))
