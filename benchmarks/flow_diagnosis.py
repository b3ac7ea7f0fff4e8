"""Why the flows trailed a per-position Gaussian: each suspect measured on the same cached features.

For one dataset category and input size, the backbone features are computed once; then NFAD's
flows are trained under each experiment (a few settings changed from the ``quick`` profile) and
evaluated after every meta-epoch with:

* image / pixel AUROC and AU-PRO of the suite's fused maps (the released scoring);
* per level: image and pixel AUROC of that level's map alone, and the AUROC of raw ℓ between
  normal and anomalous feature positions (mask nearest-downsampled to the level's grid);
* the mean per-dimension log-likelihood ℓ of training and of normal test fibers per level, next to
  what Gaussians reach on the same held-out fibers (pooled full covariance; per position, shrunk
  towards the pooled one): a flow that learned its density should reach at least the pooled one;
* the image AUROC of the fused map after PaDiM's Gaussian smoothing (σ = 4), to separate the
  density from the map post-processing (the released flows do not smooth);
* PaDiM on all levels and on each level alone, the reference on the very same features;
* checks against the released code: flows in train and eval mode give the same ℓ, every chunk
  mixes fibers of many images.

    python -m benchmarks.flow_diagnosis --dataset synthetic --category widget [--input-size 128]
        [--experiments baseline,standardize,...] [--out reports/flow_diagnosis]

Writes ``<out>/<dataset>-<category>-<size>.json`` and a Markdown table beside it; ``--summary``
renders every JSON there into ``<out>/README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bgad.baselines._common import smooth_maps

from bgad.backbones import create_backbone
from bgad.bench.cell import known_and_test, load_mask
from bgad.bench.config import RunConfig, resolve_config
from bgad.bench.method_registry import METHODS
from bgad.data.datasets import load_category
from bgad.features import FeatureCache
from bgad.fileio import atomic_write_text
from bgad.flow_detector import FlowDetector, TrainingData, downsample_masks
from bgad.metrics import image_auroc, pixel_auroc, pro_auc
from bgad.paths import cache_dir
from bgad.scoring import anomaly_maps

REPO = Path(__file__).resolve().parents[1]
STD = {"feature_norm": "standardize"}
#: name -> (what it tests, overrides of the quick profile)
EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "baseline": ("the quick profile as it was", {}),
    "long4x": ("undertraining: 4× the meta-epochs", {"meta_epochs": 24}),
    "fiber256": ("optimizer steps: fibers of 256 (16× the steps per epoch)", {"fiber_size": 256}),
    "constant_lr": (
        "schedule: no warm-up, no cosine decay",
        {"fiber_size": 256, "lr_min_factor": 1.0, "warmup_epochs": 0},
    ),
    "standardize": ("feature scale: standardising input layer", STD),
    "fiber256+standardize": ("both", {"fiber_size": 256, **STD}),
    "unconditional+standardize": (
        "the positional condition: flows without it",
        {"fiber_size": 256, "flow_arch": "unconditional", **STD},
    ),
    "unconditional": (
        "the positional condition, raw features",
        {"fiber_size": 256, "flow_arch": "unconditional"},
    ),
}


def gaussian_references(train: list[torch.Tensor], normal_test: list[torch.Tensor]) -> list[dict]:
    """Per-dimension held-out ℓ of a pooled and a per-position (shrunk) Gaussian, per level."""
    out = []
    for a, b in zip(train, normal_test, strict=True):
        n, c, h, w = a.shape
        x = a.permute(0, 2, 3, 1).reshape(-1, c).double()
        eye = torch.eye(c, dtype=torch.float64)
        pooled_cov = torch.cov(x.T) + 1e-3 * eye
        y = b.permute(0, 2, 3, 1).reshape(-1, c).double()
        pooled = torch.distributions.MultivariateNormal(x.mean(0), pooled_cov).log_prob(y).mean() / c
        xp = a.permute(2, 3, 0, 1).reshape(h * w, n, c).double()
        yp = b.permute(2, 3, 0, 1).reshape(h * w, -1, c).double()
        mean = xp.mean(1)
        xc = xp - mean[:, None]
        cov = 0.5 * (xc.transpose(1, 2) @ xc) / max(n - 1, 1) + 0.5 * pooled_cov + 1e-3 * eye
        per_pos = torch.distributions.MultivariateNormal(mean, cov).log_prob(yp.transpose(0, 1)).mean() / c
        out.append({"pooled": float(pooled), "per_position": float(per_pos)})
    return out


@dataclass
class Evaluation:
    """Everything measured after a meta-epoch, from the flows' per-level ℓ maps of the test set."""

    train: list[torch.Tensor]
    test: list[torch.Tensor]
    labels: np.ndarray
    masks: np.ndarray | None
    size: int

    def __call__(self, detector: FlowDetector) -> dict:
        size = (self.size, self.size)
        ll = detector.log_likelihoods(self.test)
        fused = anomaly_maps(ll, size)
        row: dict = {"image_auroc": image_auroc(self.labels, fused.image_scores), "top_ties": fused.top_ties}
        smoothed = smooth_maps(fused.maps, 4.0)
        row["image_auroc_smoothed"] = image_auroc(self.labels, smoothed.reshape(len(smoothed), -1).max(1))
        if self.masks is not None:
            row["pixel_auroc"] = pixel_auroc(self.masks, fused.maps)
            row["pro"] = pro_auc(self.masks, fused.maps)
        normal = self.labels == 0
        train_ll = detector.log_likelihoods([f[:32] for f in self.train])
        row["levels"] = []
        for level, x in enumerate(ll):
            alone = anomaly_maps([x], size)
            entry = {
                "image_auroc": image_auroc(self.labels, alone.image_scores),
                "train_ll": float(train_ll[level].mean()),
                "normal_test_ll": float(x[normal].mean()),
            }
            if self.masks is not None:
                entry["pixel_auroc"] = pixel_auroc(self.masks, alone.maps)
                lab = downsample_masks(torch.from_numpy(self.masks), x.shape[1:]).numpy()
                entry["position_auroc"] = pixel_auroc(lab, -x)
            row["levels"].append(entry)
        return row


def padim_reference(
    cfg: RunConfig, train: list[torch.Tensor], test: list[torch.Tensor], ev: Evaluation
) -> dict:
    """PaDiM on all levels and on each level alone (same features, same test set)."""
    out = {}
    for name, levels in [("all", [0, 1, 2])] + [(f"level{i}", [i]) for i in range(len(train))]:
        feats = [train[i] for i in levels]
        padim_cfg = cfg.with_overrides({"method": "padim"}, source="diagnosis")
        det = METHODS.get("padim").build(padim_cfg, "cpu")
        det.fit(TrainingData(feats, None, [f[:0] for f in feats], None, None, "object", None))
        scores = det.score([test[i] for i in levels], (ev.size, ev.size))
        entry = {"image_auroc": image_auroc(ev.labels, scores.image_scores)}
        if ev.masks is not None:
            entry["pixel_auroc"] = pixel_auroc(ev.masks, scores.maps)
        out[name] = entry
    return out


def released_code_checks(detector: FlowDetector, train: list[torch.Tensor]) -> dict:
    """ℓ in train vs eval mode (the released code switches modes); images per training chunk."""
    f = [x[:4] for x in train]
    ll_eval = detector.log_likelihoods(f)  # sets eval mode
    for flow in detector.flows_:
        flow.train()
    ll_train_mode = detector.log_likelihoods(f, eval_mode=False)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ll_train_mode, ll_eval, strict=True))
    n, _, h, w = train[0].shape
    batch = min(n, detector.batch_size)
    perm = torch.randperm(batch * h * w, generator=torch.Generator().manual_seed(0))
    chunk = perm[: detector.fiber_size] // (h * w)
    return {
        "max_abs_ll_train_vs_eval_mode": diff,
        "images_in_first_level0_chunk": int(chunk.unique().numel()),
        "batch_images": batch,
    }


def run(args: argparse.Namespace) -> dict:
    base = {
        "dataset": args.dataset,
        "category": args.category,
        "input_size": args.input_size,
        "method": "nfad",
    }
    cfg0 = resolve_config("quick", {"n_known_anomalies": args.known}, [("diagnosis", base)])
    data = load_category(args.dataset, args.category, None)
    known, test = known_and_test(cfg0, data)
    cache = FeatureCache(create_backbone(cfg0.backbone), args.input_size, cache_dir() / "features")
    train = cache.features([s.image_path for s in data.train])
    test_feats = cache.features([s.image_path for s in test])
    labels = np.array([s.label for s in test])
    masks = np.stack([load_mask(s, args.input_size)[0] for s in test]) if data.has_pixel_masks else None
    ev = Evaluation(train, test_feats, labels, masks, args.input_size)
    result = {
        "dataset": args.dataset,
        "category": args.category,
        "input_size": args.input_size,
        "train_images": len(train[0]),
        "test_images": len(test),
        "feature_std": [float(f.std()) for f in train],
        "gaussian_ll": gaussian_references(train, [f[torch.from_numpy(labels == 0)] for f in test_feats]),
        "padim": padim_reference(cfg0, train, test_feats, ev),
        "experiments": {},
    }
    empty = np.zeros((0, args.input_size, args.input_size, 3), np.uint8)
    for name in args.experiments:
        what, overrides = EXPERIMENTS[name]
        cfg = resolve_config("quick", {"n_known_anomalies": args.known, **overrides}, [("diagnosis", base)])
        spec = METHODS.get("nfad")
        det = spec.build(cfg, "cpu")
        curve: list[dict] = []
        eval_s = 0.0

        def after(meta: int, det=det, curve=curve, cfg=cfg, name=name) -> None:
            nonlocal eval_s
            t0 = time.perf_counter()
            row = {"meta_epoch": meta, "epochs": (meta + 1) * cfg.sub_epochs, **ev(det)}
            row["optimizer_steps"] = det.counters_["optimizer_steps"]
            curve.append(row)
            eval_s += time.perf_counter() - t0
            print(
                f"{name} meta-epoch {meta}: image {row['image_auroc']:.3f} pixel {row.get('pixel_auroc', float('nan')):.3f}",
                flush=True,
            )

        start = time.perf_counter()
        normal_only = TrainingData(
            train, empty, [f[:0] for f in train], empty, empty[..., 0], data.kind, cache.compute
        )
        det.fit(normal_only, after_meta_epoch=after)
        result["experiments"][name] = {
            "what": what,
            "overrides": overrides,
            "fit_s": time.perf_counter() - start - eval_s,
            "curve": curve,
            "checks": released_code_checks(det, train) if name == args.experiments[0] else None,
        }
    return result


def fmt(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.3f}"


def markdown(r: dict) -> str:
    g = r["gaussian_ll"]
    lines = [
        f"### {r['dataset']}/{r['category']} at {r['input_size']}² ({r['train_images']} training, {r['test_images']} test images)",
        "",
        "Feature standard deviation per level: " + ", ".join(f"{s:.1f}" for s in r["feature_std"]) + ". "
        "Held-out ℓ per dimension of Gaussians on normal test fibers, per level (pooled / per position): "
        + "; ".join(f"{fmt(x['pooled'])} / {fmt(x['per_position'])}" for x in g)
        + ". PaDiM on the same features: image "
        + fmt(r["padim"]["all"]["image_auroc"])
        + (
            f", pixel {fmt(r['padim']['all'].get('pixel_auroc'))}"
            if "pixel_auroc" in r["padim"]["all"]
            else ""
        )
        + "; on one level alone (image): "
        + ", ".join(fmt(r["padim"][f"level{i}"]["image_auroc"]) for i in range(len(g)))
        + ".",
    ]
    if r["experiments"]:  # `--experiments ""` measures the Gaussians and PaDiM only
        lines += [
            "",
            "| experiment | what it tests | steps | fit s | image AUROC | smoothed | pixel AUROC | AU-PRO | per level: image / pixel / position AUROC | normal test ℓ per level |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
    for name, e in r["experiments"].items():
        last = e["curve"][-1]
        levels = "; ".join(
            f"{fmt(x['image_auroc'])} / {fmt(x.get('pixel_auroc'))} / {fmt(x.get('position_auroc'))}"
            for x in last["levels"]
        )
        ll = ", ".join(fmt(x["normal_test_ll"]) for x in last["levels"])
        lines.append(
            f"| {name} | {e['what']} | {last['optimizer_steps']} | {e['fit_s']:.0f} | {fmt(last['image_auroc'])} | "
            f"{fmt(last['image_auroc_smoothed'])} | {fmt(last.get('pixel_auroc'))} | {fmt(last.get('pro'))} | {levels} | {ll} |"
        )
    checks = next((e["checks"] for e in r["experiments"].values() if e["checks"]), None)
    if checks:
        lines += [
            "",
            f"Released-code checks: max |ℓ(train mode) − ℓ(eval mode)| = {checks['max_abs_ll_train_vs_eval_mode']:.2e}; "
            f"the first level-0 chunk of a {checks['batch_images']}-image batch holds fibers of "
            f"{checks['images_in_first_level0_chunk']} images.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--category", default="widget")
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument(
        "--known", type=int, default=1, help="known anomalies removed from the test set (as the cells)"
    )
    p.add_argument("--experiments", default=",".join(EXPERIMENTS))
    p.add_argument("--out", type=Path, default=REPO / "reports" / "flow_diagnosis")
    p.add_argument("--summary", action="store_true", help="only render <out>/README.md from the JSON files")
    args = p.parse_args(argv)
    args.experiments = [e for e in args.experiments.split(",") if e]
    unknown = set(args.experiments) - set(EXPERIMENTS)
    if unknown:
        p.error(f"unknown experiments {sorted(unknown)}; known: {', '.join(EXPERIMENTS)}")
    if not args.summary:
        result = run(args)
        stem = f"{args.dataset}-{args.category}-{args.input_size}"
        atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    parts = [
        "# Flow diagnosis (benchmarks/flow_diagnosis.py)",
        "",
        "NFAD under each experiment, last meta-epoch; see docs/flows.md for the reading.",
        "",
    ]
    for path in sorted(args.out.glob("*.json")):
        parts.append(markdown(json.loads(path.read_text())))
    atomic_write_text(args.out / "README.md", "\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
