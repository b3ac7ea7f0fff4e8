"""Reading images and masks strictly: every file is fully decoded, every problem names the file.

Every reader and converter in :mod:`bgad.data` goes through :func:`read_image` and :func:`read_mask`,
so the rules for odd modes (16-bit, palette, alpha, CMYK) and bad files live in one place.

Images are *not* EXIF-transposed (the reference BGAD code reads with ``PIL.Image.open(...).convert("RGB")``
and never rotates); masks must have exactly the image's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from bgad.errors import UserError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetError",
    "StrayEntryWording",
    "is_image_file",
    "unreadable_file_error",
    "list_image_files",
    "read_image",
    "read_mask",
    "visible_entries",
]

#: Lower-case suffixes (with the dot) that count as images. Matching is case-insensitive.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


class DatasetError(UserError):
    """Bad or missing dataset input. The message names the file or folder and says what to do."""


def is_image_file(path: Path | str) -> bool:
    """True when ``path``'s suffix is an image extension, in any case (``.JPG``, ``.Jpeg`` ...)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def visible_entries(folder: Path) -> list[Path]:
    """Entries of ``folder`` sorted by name; hidden names (leading ``.``, e.g. ``.DS_Store``) are left out."""
    folder = Path(folder)
    try:
        with os.scandir(folder) as it:
            names = [e.name for e in it if not e.name.startswith(".")]
    except PermissionError as exc:
        raise DatasetError(
            f"cannot list folder {folder}: {exc.strerror}. Make it readable (chmod a+rx {folder}) or move it "
            "out of the dataset folder."
        ) from exc
    return [folder / name for name in sorted(names)]


@dataclass(frozen=True)
class StrayEntryWording:
    """How a reader words the error for a sub-folder or a non-image file inside an image folder.

    Each reader keeps its own phrasing (users and tests match on it). Both fields are ``str.format``
    templates with ``{path}`` and ``{folder}``; ``file`` may also use ``{suffix}`` (the extension's repr,
    ``'(none)'`` when it has none) and ``{extensions}`` (the accepted extensions, comma-separated).
    """

    folder: str
    file: str

    def folder_error(self, path: Path, folder: Path) -> DatasetError:
        return DatasetError(self.folder.format(path=path, folder=folder))

    def file_error(self, path: Path, folder: Path) -> DatasetError:
        return DatasetError(
            self.file.format(
                path=path,
                folder=folder,
                suffix=repr(path.suffix or "(none)"),
                extensions=", ".join(sorted(IMAGE_EXTENSIONS)),
            )
        )


def list_image_files(
    folder: Path, wording: StrayEntryWording, *, skip: Callable[[Path], bool] | None = None
) -> list[Path]:
    """Sorted image files of ``folder``; any other visible file or sub-folder raises :class:`DatasetError`.

    Nothing is skipped silently: ``skip`` names the entries a caller expects next to the images (e.g. a
    labels file); every other stray entry is an error worded by ``wording``. An empty list is returned
    as is (callers word "holds no images" themselves).
    """
    images: list[Path] = []
    for path in visible_entries(folder):
        if skip is not None and skip(path):
            continue
        if path.is_dir():
            raise wording.folder_error(path, folder)
        if not is_image_file(path):
            raise wording.file_error(path, folder)
        images.append(path)
    return images


def unreadable_file_error(path: Path, exc: OSError) -> DatasetError:
    """A file of the dataset that cannot be opened (permissions, I/O): name it and say what to do."""
    return DatasetError(
        f"cannot read {path}: {exc.strerror or exc}. Make it readable (chmod a+r {path}) or move it out "
        "of the dataset folder."
    )


def _open_decoded(path: Path, what: str) -> Image.Image:
    """Open and fully decode ``path`` (``load()``), turning every failure into a DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{what} file {path} does not exist (or is not a file); check the dataset folder.")
    try:
        img = Image.open(path)
        img.load()  # actually decode: a truncated file fails here, not later in a worker
    except PermissionError as exc:  # not the file's content: its mode
        raise unreadable_file_error(path, exc) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(
            f"cannot read {what} {path}: {exc.__class__.__name__}: {exc}. The file is corrupt, truncated or "
            "not an image; re-download or re-convert the dataset (or move the file out of the dataset folder)."
        ) from exc
    return img


def _high_bit_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a single-channel integer/float array of more than 8 bits to uint8 (0..65535 -> 0..255)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype.kind == "f":
        a = np.nan_to_num(arr.astype(np.float64))
        if a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = arr.astype(np.int64)
    if a.size and a.min() >= 0 and a.max() <= 255 and arr.dtype.itemsize == 1:
        return a.astype(np.uint8)
    # 16-bit data (mode I;16*, or mode I holding a 16-bit PNG): map 0..65535 onto 0..255.
    a = np.clip(a, 0, 65535)
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """Read any image file as a ``uint8`` array of shape ``(H, W, 3)`` (RGB).

    Grey (``L``, ``1``), grey+alpha (``LA``), palette (``P``), ``RGBA``, ``CMYK`` and 16-bit grey
    (``I;16``/``I``, scaled to 8 bit) all become 3-channel RGB; alpha is dropped. A missing, unreadable
    or truncated file raises :class:`DatasetError` naming it.
    """
    path = Path(path)
    img = _open_decoded(path, "image")
    try:
        mode = img.mode
        if mode in ("I", "F") or mode.startswith("I;"):
            grey = _high_bit_to_uint8(np.asarray(img))
            if grey.ndim != 2:
                raise DatasetError(f"image {path} has unexpected shape {grey.shape} for mode {mode}.")
            out = np.repeat(grey[:, :, None], 3, axis=2)
        else:
            if mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            if img.mode != "RGB":
                img = img.convert("RGB")
            out = np.asarray(img, dtype=np.uint8)
    except DatasetError:
        raise
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cannot convert image {path} (mode {img.mode}) to RGB: {exc}. Re-save it as an 8-bit RGB/grey PNG."
        ) from exc
    if out.ndim != 3 or out.shape[2] != 3:
        raise DatasetError(f"image {path} decoded to unexpected shape {out.shape}; re-save it as RGB PNG.")
    return np.ascontiguousarray(out)


def read_mask(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a binary ground-truth mask as a ``uint8`` array of shape ``(H, W)`` with values in ``{0, 1}``.

    Grey or RGB masks are accepted when their pixel values take at most two levels, ``{0, v}`` with
    ``v > 0`` (or a single level); any channel above 0 marks a defect pixel (alpha is ignored).
    Anything else (e.g. JPEG-compressed or anti-aliased masks) raises :class:`DatasetError` "not binary"
    listing the values found. ``expected_size`` is the image's ``(width, height)``; a different mask
    size raises :class:`DatasetError` naming both sizes.
    """
    path = Path(path)
    img = _open_decoded(path, "mask")
    if expected_size is not None:
        exp = (int(expected_size[0]), int(expected_size[1]))
        if tuple(img.size) != exp:
            raise DatasetError(
                f"mask {path} has size {img.size[0]}x{img.size[1]} (width x height) but its image has "
                f"{exp[0]}x{exp[1]}; masks must match their image exactly - re-convert the dataset."
            )
    mode = img.mode
    if mode == "P":
        img = img.convert("RGB")
        mode = "RGB"
    if mode in ("LA", "PA"):
        img = img.getchannel(0)
    elif mode == "RGBA":
        img = img.convert("RGB")
    elif mode not in ("1", "L", "RGB", "I", "F") and not mode.startswith("I;"):
        img = img.convert("RGB")
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    values = np.unique(arr)
    nonzero = values[values != 0]
    if nonzero.size > 1 or (values.size and values.min() < 0):
        shown = ", ".join(str(v) for v in values[:8].tolist())
        more = f", ... ({values.size} distinct values)" if values.size > 8 else ""
        raise DatasetError(
            f"mask {path} is not binary: found values {{{shown}{more}}}; a mask must contain only 0 and "
            "one foreground value (e.g. 0/255). Re-save it losslessly (PNG) without anti-aliasing."
        )
    if arr.ndim == 3:
        out = (arr != 0).any(axis=2)
    elif arr.ndim == 2:
        out = arr != 0
    else:
        raise DatasetError(f"mask {path} decoded to unexpected shape {arr.shape}; re-save it as a grey PNG.")
    return np.ascontiguousarray(out.astype(np.uint8))
