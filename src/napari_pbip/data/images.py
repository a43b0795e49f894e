"""Reading and writing patches and label masks.

Images are RGB ``uint8 (H, W, 3)`` arrays. Masks are ``uint8 (H, W)`` arrays of mask indices
(the data set's background index, and tissue class ``k`` at the ``k``-th other index: see
:func:`~napari_pbip.data.layouts.tissue_mask_indices`), stored as palette PNGs so that any image
viewer shows them in the data set's colours. A folder of masks made for a folder of images names
each mask like its image (:func:`mask_file_names`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import _atomic
from ..errors import DatasetError

if TYPE_CHECKING:
    from .layouts import DatasetSpec

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, hidden files skipped), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist or is not a folder")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def mask_file_names(images: Sequence[Path]) -> list[str]:
    """The mask file name of each image: its stem + ``.png`` (``a.png`` -> ``a.png``, never ``a.png.png``).

    Raises:
        DatasetError: two images would give masks of the same name (such as ``a.png`` and ``a.tif``).
    """
    names = [Path(p).stem + ".png" for p in images]
    seen: set[str] = set()
    dupes = sorted({n for n in names if n in seen or seen.add(n)})
    if dupes:
        raise DatasetError(f"images {dupes[:3]} would give masks of the same name; rename one of each pair")
    return names


def same_size_runs(shapes: Sequence[tuple[int, ...]], batch_size: int) -> Iterator[list[int]]:
    """Runs of consecutive indices whose ``shapes`` are equal, at most ``batch_size`` long (a batch each)."""
    run: list[int] = []
    for i, shape in enumerate(shapes):
        if run and (len(run) == batch_size or shape != shapes[run[0]]):
            yield run
            run = []
        run.append(i)
    if run:
        yield run


def _open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(
            f"cannot read {path} as an image ({exc}); expected a PNG, JPEG, TIFF or BMP file"
        ) from exc
    return image


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):  # 16-bit data (PIL may hand it over as int32)
        top = 65535 if array.dtype == np.uint16 or array.max(initial=0) > 255 else 255
        return (np.clip(array, 0, top).astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
    return (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # float images in [0, 1]


def over_white(rgba: np.ndarray, premultiplied: bool = False) -> np.ndarray:
    """RGBA uint8 ``(..., 4)`` -> RGB composited over white: transparent pixels show as glass.

    The one rule for transparency everywhere an image or slide is read (PNG and TIFF alpha, and
    OpenSlide's premultiplied RGBA), so transparent areas are never segmented as tissue.

    Args:
        rgba: uint8 array whose last axis is R, G, B, alpha.
        premultiplied: the colours are already multiplied by alpha (OpenSlide).
    """
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    if not premultiplied:
        rgb = (rgb * alpha + 127) // 255
    return np.minimum(rgb + (255 - alpha), 255).astype(np.uint8)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as RGB ``uint8 (H, W, 3)``.

    Transparent pixels become white, as glass (:func:`over_white`); grey and palette images are
    expanded to three channels, 16-bit images are scaled to 8 bits.

    Raises:
        DatasetError: the file is missing or not a readable image.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        array = _read_tiff(path)
    else:
        image = _open(path)
        if "transparency" in image.info or image.mode in ("P", "PA", "LA", "RGBA"):
            image = image.convert("RGBA")  # keeps the alpha (also a palette's transparent entry)
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
            image = image.convert("RGB")
        array = np.asarray(image)
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 2:  # grey + alpha
        array = over_white(np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2))
    elif array.ndim == 3 and array.shape[2] == 4:
        array = over_white(array)
    elif array.ndim == 3 and array.shape[2] >= 3:
        array = array[:, :, :3]
    else:
        raise DatasetError(f"image {path} has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    return np.ascontiguousarray(array)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        array = tifffile.imread(path, level=0) if path.exists() else None
    except Exception as exc:  # tifffile raises many types for bad files
        raise DatasetError(f"cannot read {path} as a TIFF image ({exc})") from exc
    if array is None:
        raise DatasetError(f"image {path} does not exist")
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):  # planar (C, H, W)
        array = np.moveaxis(array, 0, -1)
    return array


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB ``uint8 (H, W, 3)`` image atomically (format from the suffix, PNG by default)."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DatasetError(
            f"image to write has shape {image.shape} and dtype {image.dtype}; expected uint8 (H, W, 3)"
        )
    path = Path(path)
    with _atomic.atomic_path(path, suffix=path.suffix or ".png") as tmp:
        Image.fromarray(image).save(tmp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        path.suffix.lower(), "PNG"
    )


def nearest_palette_indices(rgb: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Map each RGB pixel of ``rgb (H, W, 3)`` to the index of the nearest palette colour."""
    rgb = np.asarray(rgb, dtype=np.uint8)[:, :, :3]
    colours = np.asarray(palette, dtype=np.int64).reshape(-1, 3)
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique, inverse = np.unique(packed.ravel(), return_inverse=True)
    seen = np.stack([(unique >> 16) & 255, (unique >> 8) & 255, unique & 255], axis=1)
    dist = ((seen[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)
    return dist.argmin(axis=1).astype(np.uint8)[inverse].reshape(rgb.shape[:2])


def read_mask(path: str | os.PathLike, spec: DatasetSpec) -> np.ndarray:
    """Read a label mask as mask indices ``uint8 (H, W)``.

    A palette (``P``) or grey (``L``) PNG holds the indices directly; an RGB mask is mapped to
    the nearest colour of ``spec.palette``.

    Raises:
        DatasetError: the file is unreadable or holds indices the data set does not have.
    """
    path = Path(path)
    image = _open(path)
    if image.mode in ("P", "L", "I", "I;16", "1"):
        mask = np.asarray(image)
        top = int(mask.max(initial=0))
        if top >= len(spec.palette):
            values = sorted(int(v) for v in np.unique(mask) if v >= len(spec.palette))
            raise DatasetError(
                f"mask {path} holds indices {values[:8]}, outside 0..{len(spec.palette) - 1} "
                f"(classes {list(spec.classes)} and background {spec.background_index}); "
                "check that the mask belongs to this data set"
            )
        return mask.astype(np.uint8)
    if image.mode not in ("RGB", "RGBA", "RGBX"):
        image = image.convert("RGB")
    return nearest_palette_indices(np.asarray(image), spec.palette)


IGNORE = 255  # a mask pixel no loss learns from: unsure pseudo-mask pixels, padding of small crops


def with_ignore_colour(palette: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """``palette`` padded to 256 colours, :data:`IGNORE` grey, so :func:`write_mask` can write ignored pixels."""
    colours = [tuple(c) for c in palette]
    return colours + [(0, 0, 0)] * (IGNORE - len(colours)) + [(128, 128, 128)]


def write_mask(path: str | os.PathLike, mask: np.ndarray, palette: Sequence[Sequence[int]]) -> None:
    """Write mask indices as a palette PNG atomically.

    Args:
        path: output file (``.png``).
        mask: integer ``(H, W)`` array of indices into ``palette``.
        palette: one RGB colour per mask index.

    Raises:
        DatasetError: the mask is not 2-D or holds an index without a palette colour.
    """
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == np.bool_):
        raise DatasetError(
            f"mask to write has shape {mask.shape} and dtype {mask.dtype}; expected integer (H, W)"
        )
    colours = [int(c) for colour in palette for c in colour[:3]]
    n = len(colours) // 3
    if n == 0 or n > 256:
        raise DatasetError(f"palette has {n} colours; expected 1 to 256 RGB triples")
    if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= n):
        raise DatasetError(
            f"mask to write holds values {int(mask.min())}..{int(mask.max())}; expected indices 0..{n - 1} "
            f"(one per palette colour)"
        )
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    image.putpalette(colours + [0, 0, 0] * (256 - n))
    path = Path(path)
    with _atomic.atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
