"""Benchmark images from disk to embeddings, read like the published evaluations read them.

Each image is resized (shorter side, bicubic) and centre-cropped to the model's input size
with PIL, as open_clip's validation transform does, so the encoder only normalises; a
background thread reads the next batch while the model embeds the current one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import EngineError
from ..progress import CancelFn, ProgressFn, check_cancel, no_progress


def read_image(path: str | Path, size: int) -> np.ndarray:
    """uint8 (size, size, 3) RGB: shorter side resized to ``size``, then centre-cropped."""
    from PIL import Image

    image = _open(Path(path))
    w, h = image.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.BICUBIC)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _open(path: Path):
    """A PIL RGB image; GDAL reads what PIL cannot (multi-band or non-8-bit TIFFs)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr"):
                return im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        pass
    return Image.fromarray(_read_with_gdal(path))


def _read_with_gdal(path: Path) -> np.ndarray:
    from osgeo import gdal

    from ..gdalutil import gdal_errors
    from ..tiling import choose_bands

    try:
        with gdal_errors() as errors:
            ds = errors.check(gdal.Open(str(path)))
            bands = choose_bands(ds, None)
            data = np.stack([errors.check(ds.GetRasterBand(b).ReadAsArray()) for b in bands], axis=-1)
    except (RuntimeError, EngineError, AttributeError) as exc:
        raise EngineError(f"Cannot read the image {path} ({str(exc).strip() or 'unknown format'}).") from None
    if data.dtype == np.uint8:
        return np.ascontiguousarray(data)
    out = np.zeros(data.shape, dtype=np.uint8)
    for c in range(data.shape[-1]):
        band = data[..., c].astype(np.float64)
        finite = band[np.isfinite(band)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        scaled = (np.nan_to_num(band, nan=lo) - lo) / max(hi - lo, 1e-12) * 255.0
        out[..., c] = np.clip(scaled, 0, 255).round().astype(np.uint8)
    return out


def read_size_for(encoder) -> int:
    """The size images are read at: the model's own input size, so it is resized only once."""
    return int(getattr(encoder, "image_size", 224))


def embed_image_files(paths: Sequence[Path], encoder, batch_size: int = 64, read_size: int | None = None,
                      progress: ProgressFn | None = None, cancel: CancelFn | None = None) -> np.ndarray:
    """(N, D) unit embeddings of image files, in ``paths`` order."""
    from ..pipeline import prefetch_batches

    progress = progress or no_progress
    size = read_size or read_size_for(encoder)
    items = ((i, read_image(p, size)) for i, p in enumerate(paths))
    parts: list[np.ndarray] = []
    done = 0
    for _, batch in prefetch_batches(items, batch_size, np.stack):
        check_cancel(cancel)
        parts.append(np.asarray(encoder.encode_images(batch), dtype=np.float32))
        done += len(batch)
        progress(done / max(len(paths), 1), f"embedded {done} of {len(paths)} images")
    if not parts:
        return np.zeros((0, int(getattr(encoder, "dim", 0))), dtype=np.float32)
    return np.concatenate(parts)


def embed_texts(texts: Sequence[str], encoder, batch_size: int = 64, progress: ProgressFn | None = None,
                cancel: CancelFn | None = None) -> np.ndarray:
    """(N, D) unit embeddings of raw texts (no prompt templates), in order."""
    progress = progress or no_progress
    parts = []
    for start in range(0, len(texts), batch_size):
        check_cancel(cancel)
        parts.append(np.asarray(encoder.encode_texts(list(texts[start:start + batch_size])), dtype=np.float32))
        done = min(start + batch_size, len(texts))
        progress(done / max(len(texts), 1), f"embedded {done} of {len(texts)} captions")
    return np.concatenate(parts) if parts else np.zeros((0, int(getattr(encoder, "dim", 0))), dtype=np.float32)
