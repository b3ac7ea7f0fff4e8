"""Image preprocessing and the frozen-backbone feature cache.

The released code recomputes the frozen backbone for every image in every epoch (~200 times per
image). Features of un-augmented images never change, so they are computed once per run and,
optionally, kept on disk keyed by the image bytes, the backbone (weights hash included) and the
input size, so later runs reuse them. Results are identical with and without the disk cache.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bgad import threads
from bgad.backbones import FeatureExtractor
from bgad.data.images import read_image
from bgad.fileio import atomic_write_with, file_sha256

PREPROCESS_VERSION = "squash-resize-lanczos/imagenet-norm v1"


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Squash-resize an RGB uint8 image to size×size with Lanczos (no crop, no augmentation)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a {0,1} mask, so it stays binary."""
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))


def to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [0,1]."""
    batch = torch.from_numpy(np.ascontiguousarray(np.stack(list(images))))
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


class FeatureCache:
    """Computes backbone features of image files once; optionally persists them per image on disk."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        input_size: int,
        root: Path | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
    ) -> None:
        self.extractor = extractor
        self.input_size = input_size
        self.root = Path(root) if root is not None else None
        self.dtype = dtype
        self.batch_size = batch_size
        self.hits = 0
        self.misses = 0
        self.disabled: str | None = None  # why the disk cache was switched off, if it was

    @property
    def key(self) -> str:
        """Identity of the feature function: backbone and weights, input size, preprocessing, dtype."""
        desc = self.extractor.describe()
        ident = {
            "timm_name": desc["timm_name"],
            "stage_indices": desc["stage_indices"],
            "weights_sha256": desc["weights"]["sha256"],
            "weights_tag": desc["weights"]["tag"],
            "random": desc["weights"]["random"],
            "input_size": self.input_size,
            "preprocess": PREPROCESS_VERSION,
            # the same function, but the last float bits depend on how it is computed
            "memory_format": desc.get("memory_format"),
            "folded_batch_norms": desc.get("folded_batch_norms"),
            "dtype": str(self.dtype),
        }
        if desc["weights"]["random"]:
            # Random weights depend on the torch seed at construction: never share them across runs.
            ident["instance"] = id(self.extractor)
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]

    def compute(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Features of already-resized uint8 images (used directly for synthetic anomalies)."""
        levels: list[list[torch.Tensor]] = []
        for start in range(0, len(images), self.batch_size):
            threads.tick()
            device = self.extractor.mean.device
            out = self.extractor(to_tensor(images[start : start + self.batch_size]).to(device))
            levels.append([f.cpu() for f in out])
        return [torch.cat([b[i] for b in levels]) for i in range(len(levels[0]))]

    def load_resized(self, path: Path) -> np.ndarray:
        return resize_image(read_image(path), self.input_size)

    def images(self, paths: Sequence[Path]) -> list[torch.Tensor]:
        """The resized images themselves as one "level", float (N,3,S,S) in [0,1]: the input of a method
        that fine-tunes its own backbone (DevNet, DRA), prepared exactly as the frozen backbone's."""
        resized = [self.load_resized(p) for p in paths]
        return [to_tensor(resized) if resized else torch.zeros(0, 3, self.input_size, self.input_size)]

    def read(self, paths: Sequence[Path], what: str = "features") -> list[torch.Tensor]:
        """A method's inputs of image files: ``features`` (frozen backbone, cached) or ``images``."""
        if what not in ("features", "images"):
            raise ValueError(f"a method reads 'features' or 'images', not {what!r}")
        return self.features(paths) if what == "features" else self.images(paths)

    def features(
        self, paths: Sequence[Path], advance: Callable[[int], None] | None = None
    ) -> list[torch.Tensor]:
        """Per-level stacked features (N,C,h,w) of image files, from disk where already computed."""
        results: list[list[torch.Tensor] | None] = [None] * len(paths)
        todo: list[tuple[int, str | None]] = []
        for i, path in enumerate(paths):
            digest = file_sha256(path) if self.root is not None else None
            cached = self._load(digest) if digest else None
            if cached is not None:
                results[i] = cached
                self.hits += 1
                if advance:
                    advance(1)
            else:
                todo.append((i, digest))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            feats = self.compute([self.load_resized(paths[i]) for i, _ in chunk])
            for j, (i, digest) in enumerate(chunk):
                per_image = [f[j].to(self.dtype).clone() for f in feats]
                results[i] = per_image
                if digest and self.root is not None:  # the cache may have been switched off meanwhile
                    self._store(digest, per_image)
            self.misses += len(chunk)
            if advance:
                advance(len(chunk))
        n_levels = len(results[0]) if results else 0
        return [torch.stack([r[lvl] for r in results]).float() for lvl in range(n_levels)]

    def _path(self, digest: str) -> Path:
        assert self.root is not None
        return self.root / self.key / digest[:2] / f"{digest}.pt"

    def _load(self, digest: str) -> list[torch.Tensor] | None:
        path = self._path(digest)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged cache entry is recomputed, never trusted
            return None

    def _store(self, digest: str, feats: list[torch.Tensor]) -> None:
        """Keep one image's features on disk; a cache that cannot be written is switched off, with a warning."""
        path = self._path(digest)
        try:
            atomic_write_with(path, lambda tmp: torch.save(feats, tmp))
        except OSError as exc:
            self.disabled = f"{self.root} cannot be written ({exc.strerror or exc}); features are not cached"
            warnings.warn(
                f"feature cache {self.disabled}. Set BGAD_CACHE_DIR to a writable folder, or run with "
                "--no-feature-cache",
                stacklevel=2,
            )
            self.root = None
