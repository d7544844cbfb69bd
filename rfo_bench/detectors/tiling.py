"""Training tiles at native spacing: where to cut, which boxes a tile keeps, and the tile files.

A full-resolution film (2k x 2k at about 0.2 mm per pixel) is far larger than a detector input, and
shrinking it to one makes a 0.4 mm blade vanish. Training therefore sees square tiles cut from the film
at its own spacing: tiles around objects (positives) and object-free tiles (negatives) in a configurable
mix, plus, optionally, each whole film shrunk to one tile so the detector also learns the coarse scale
that sliced inference uses for objects larger than a tile (:mod:`rfo_bench.detectors.sliced`).

Objects cut by a tile edge follow one rule (the *visible-fraction rule*): an object keeps its box,
clipped to the tile, when at least ``min_visible_fraction`` of its box area lies inside the tile.
An object that is visible in the tile but below that fraction must not appear unlabelled: by default
(``cut_policy="drop"``) the candidate tile is rejected and another one drawn; with ``"mask"`` the
object's visible part is painted with the tile's median (an ignore region realised in the pixels, since
neither the torchvision heads nor Ultralytics take ignore boxes).

The fraction is of the object's whole box, so an object whose box is more than about twice a tile's area
(``min(w, T) * min(h, T) < fraction * w * h``) is never labelled in a native tile, and a tile that cuts it
is rejected: such objects are learned at the coarse scale only (the whole-film tiles), as sliced inference
finds them in its whole-film pass. In the shipped recipe's films (320-px tiles at 0.18 mm per pixel) that is
82 % of clamps, 51 % of cottonoids, 39 % of zippers, 22 % of guidewires and 16 % of sponges; the
recipe's checkpoint after epoch 5 found clamps at AP50 0.58 on validation films that way.

Intensities: each film is windowed by its own percentiles (:func:`window_film`) before any cut, at
training and at inference alike, so faint objects (sponges, cottonoids, guidewires) span many grey
levels instead of a handful once a detector reads them (YOLO reads 8 bits).

Coordinates: a tile is ``film[y0:y0 + T, x0:x0 + T]`` (zero-padded where the film ends) resized by
``scale`` (1 for native tiles); :func:`tile_to_film` and :func:`film_to_tile` convert boxes both ways.

The slicing follows SAHI (Akyon et al., "Slicing Aided Hyper Inference and Fine-tuning for Small Object
Detection", ICIP 2022); see :mod:`rfo_bench.detectors.sliced` for why SAHI itself is not a dependency.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

CUT_POLICIES = ("drop", "mask")
"""What happens to a candidate tile that would show an object below the visible-fraction rule."""


@dataclass(frozen=True)
class TileConfig:
    """How training tiles are cut (and how films are windowed, at training and inference).

    Attributes:
        tile_size: tile side in pixels at the film's native spacing (the detector's ``imgsz``).
        tiles_per_object: positive tiles drawn around each annotated object (random offsets).
        negative_ratio: object-free tiles per positive tile, drawn from every film (0 = none).
        min_visible_fraction: an object cut by the tile edge keeps its clipped box when at least this
            fraction of its box area is inside the tile (``(0, 1]``).
        cut_policy: ``drop`` (reject a tile showing an object below the rule) or ``mask`` (paint that
            object's visible part with the tile median).
        include_whole_films: add every film shrunk to one tile (the coarse scale of sliced inference).
        window_percentiles: ``(low, high)`` percentiles of each film mapped to ``0`` and ``1``.
        max_attempts: candidate windows tried per tile before giving up on it.
    """

    tile_size: int = 320
    tiles_per_object: int = 2
    negative_ratio: float = 0.5
    min_visible_fraction: float = 0.5
    cut_policy: str = "drop"
    include_whole_films: bool = True
    window_percentiles: tuple[float, float] = (0.5, 99.9)
    max_attempts: int = 25

    def __post_init__(self) -> None:
        for name in ("tile_size", "tiles_per_object", "max_attempts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserInputError("must be a positive integer", field=name, value=value)
        if self.tile_size < 32:
            raise UserInputError("tile size must be at least 32 px", field="tile_size", value=self.tile_size)
        if not 0 <= float(self.negative_ratio) <= 100:
            raise UserInputError("must be in [0, 100]", field="negative_ratio", value=self.negative_ratio)
        if not 0 < float(self.min_visible_fraction) <= 1:
            raise UserInputError("must be in (0, 1]", field="min_visible_fraction", value=self.min_visible_fraction)
        if self.cut_policy not in CUT_POLICIES:
            raise UserInputError("unknown cut policy; expected one of: " + ", ".join(CUT_POLICIES),
                                 field="cut_policy", value=self.cut_policy)
        low, high = (float(v) for v in self.window_percentiles)
        if not 0 <= low < high <= 100:
            raise UserInputError("expected two percentiles 0 <= low < high <= 100", field="window_percentiles",
                                 value=self.window_percentiles)
        object.__setattr__(self, "window_percentiles", (low, high))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window_percentiles"] = list(self.window_percentiles)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileConfig:
        values = dict(data)
        if "window_percentiles" in values:
            values["window_percentiles"] = tuple(values["window_percentiles"])
        return cls(**values)


@dataclass(frozen=True)
class TilePlan:
    """One tile to cut from one film.

    Attributes:
        window_xyxy: ``(x0, y0, x1, y1)`` integer film pixels covered (may extend past the film: padded).
        scale: tile pixels per film pixel (1 for native tiles, ``< 1`` for a whole film shrunk).
        boxes_xyxy: ``float32 [K, 4]`` kept boxes in tile pixels.
        category_ids: ``int64 [K]`` their categories.
        mask_xyxy: ``float32 [M, 4]`` tile regions painted over (objects below the rule, ``mask`` policy).
        kind: ``tile`` (native spacing) or ``film`` (the whole film shrunk).
    """

    window_xyxy: tuple[int, int, int, int]
    scale: float
    boxes_xyxy: np.ndarray
    category_ids: np.ndarray
    mask_xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    kind: str = "tile"

    @property
    def origin_xy(self) -> tuple[int, int]:
        return self.window_xyxy[0], self.window_xyxy[1]


def window_film(pixels: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.9)) -> np.ndarray:
    """Map a film's ``low``-``high`` percentile range to ``[0, 1]`` (clipped), ``float32``.

    The percentiles are taken on every 4th row and column (the window of a 2k film in milliseconds); a
    flat film (``high == low``) comes back as zeros.

    Args:
        pixels: ``[H, W]`` film, any float or integer type.
        percentiles: ``(low, high)`` in percent.
    """
    data = np.asarray(pixels, dtype=np.float32)
    low, high = np.percentile(data[::4, ::4], percentiles)
    if not high > low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def tile_to_film(boxes_xyxy: np.ndarray, origin_xy: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Boxes ``[N, 4]`` in tile pixels -> film pixels: ``box / scale + origin``."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4) / scale
    return (boxes + np.array([*origin_xy, *origin_xy], dtype=np.float64)).astype(np.float32)


def film_to_tile(boxes_xyxy: np.ndarray, origin_xy: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Boxes ``[N, 4]`` in film pixels -> tile pixels: ``(box - origin) * scale`` (inverse of :func:`tile_to_film`)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return ((boxes - np.array([*origin_xy, *origin_xy], dtype=np.float64)) * scale).astype(np.float32)


def clip_to_window(boxes_xyxy: np.ndarray, window_xyxy: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Clip film boxes to a window; return ``(clipped boxes [N, 4] film px, visible fraction [N])``.

    The visible fraction is the clipped area over the box area (0 for a box outside the window or
    without area).
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = (float(v) for v in window_xyxy)
    clipped = np.stack([boxes[:, 0].clip(x0, x1), boxes[:, 1].clip(y0, y1),
                        boxes[:, 2].clip(x0, x1), boxes[:, 3].clip(y0, y1)], axis=1)
    inside = np.clip(clipped[:, 2] - clipped[:, 0], 0, None) * np.clip(clipped[:, 3] - clipped[:, 1], 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    fraction = np.divide(inside, area, out=np.zeros_like(inside), where=area > 0)
    return clipped, fraction


def _intersects(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether any box of ``a [N, 4]`` overlaps any box of ``b [M, 4]`` with positive area."""
    if not len(a) or not len(b):
        return False
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return bool(((w > 0) & (h > 0)).any())


def plan_window(window_xyxy: tuple[int, int, int, int], boxes_xyxy: np.ndarray, category_ids: np.ndarray,
                config: TileConfig) -> TilePlan | None:
    """Apply the visible-fraction rule to one native-spacing window; ``None`` when the tile must be rejected.

    Args:
        window_xyxy: integer film window ``(x0, y0, x0 + T, y0 + T)``.
        boxes_xyxy: ``[N, 4]`` film boxes (already clipped to the film).
        category_ids: ``[N]`` categories.
        config: the rule and the cut policy.

    Returns:
        The plan (boxes in tile pixels), or ``None`` when an object below the rule is visible and the
        policy is ``drop`` (or its mask would cover part of a kept object).
    """
    clipped, fraction = clip_to_window(boxes_xyxy, window_xyxy)
    visible = fraction > 0
    kept = visible & (fraction >= config.min_visible_fraction)
    cut = visible & ~kept
    origin = window_xyxy[:2]
    masks = np.zeros((0, 4), np.float32)
    if cut.any():
        if config.cut_policy == "drop" or _intersects(clipped[cut], clipped[kept]):
            return None
        masks = film_to_tile(clipped[cut], origin)
    return TilePlan(window_xyxy, 1.0, film_to_tile(clipped[kept], origin),
                    np.asarray(category_ids, dtype=np.int64)[kept], masks)


def _offsets(low: float, high: float, size: int, tile: int, rng: np.random.Generator) -> int:
    """An integer tile start in ``[low, high]`` that keeps the tile inside the film where possible."""
    limit = max(size - tile, 0)
    lo, hi = int(np.clip(np.floor(low), 0, limit)), int(np.clip(np.ceil(high), 0, limit))
    lo, hi = min(lo, hi), max(lo, hi)
    return int(rng.integers(lo, hi + 1))


def plan_film_tiles(height: int, width: int, boxes_xyxy: np.ndarray, category_ids: np.ndarray,
                    config: TileConfig, rng: np.random.Generator) -> list[TilePlan]:
    """``config.tiles_per_object`` positive tiles around each object of one film.

    A tile for an object smaller than the tile contains it whole (random offset); for a larger one it
    lies inside it (kept only when the rule allows). Candidates rejected by :func:`plan_window` are
    redrawn up to ``config.max_attempts`` times; a tile that finds no valid window is skipped.

    Args:
        height: film rows.
        width: film columns.
        boxes_xyxy: ``[N, 4]`` film boxes (clipped to the film, positive area).
        category_ids: ``[N]``.
        config: tile size, rule, counts.
        rng: the film's generator.
    """
    size = config.tile_size
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    plans: list[TilePlan] = []
    for box in boxes:
        for _ in range(config.tiles_per_object):
            for _ in range(config.max_attempts):
                x0 = _offsets(min(box[0], box[2] - size), max(box[0], box[2] - size), width, size, rng)
                y0 = _offsets(min(box[1], box[3] - size), max(box[1], box[3] - size), height, size, rng)
                plan = plan_window((x0, y0, x0 + size, y0 + size), boxes, category_ids, config)
                if plan is not None and len(plan.category_ids):
                    plans.append(plan)
                    break
    return plans


def plan_negative_tiles(height: int, width: int, boxes_xyxy: np.ndarray, config: TileConfig,
                        rng: np.random.Generator, count: int) -> list[TilePlan]:
    """``count`` tiles of one film that show no part of any object (fewer when none can be found)."""
    size = config.tile_size
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    out = []
    for _ in range(count):
        for _ in range(config.max_attempts):
            x0 = _offsets(0, width - size, width, size, rng)
            y0 = _offsets(0, height - size, height, size, rng)
            window = (x0, y0, x0 + size, y0 + size)
            if not (clip_to_window(boxes, window)[1] > 0).any():
                out.append(TilePlan(window, 1.0, np.zeros((0, 4), np.float32), np.zeros(0, np.int64)))
                break
    return out


def whole_film_plan(height: int, width: int, boxes_xyxy: np.ndarray, category_ids: np.ndarray,
                    tile_size: int) -> TilePlan:
    """The whole film shrunk so its longest side is ``tile_size`` (never enlarged), every box kept."""
    scale = min(1.0, tile_size / max(height, width))
    return TilePlan((0, 0, width, height), scale, film_to_tile(boxes_xyxy, (0, 0), scale),
                    np.asarray(category_ids, dtype=np.int64), kind="film")


def cut_tile(film: np.ndarray, plan: TilePlan) -> np.ndarray:
    """The tile pixels of ``plan``: crop (zero-padded past the film), masks painted, resized by ``scale``.

    Args:
        film: ``float32 [H, W]`` windowed film.
        plan: the tile.

    Returns:
        ``float32 [h, w]`` tile: ``T x T`` for native tiles, the shrunk film for a whole-film plan.
    """
    x0, y0, x1, y1 = plan.window_xyxy
    height, width = film.shape[:2]
    tile = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    if sy1 > sy0 and sx1 > sx0:
        tile[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = film[sy0:sy1, sx0:sx1]
    if len(plan.mask_xyxy):
        fill = float(np.median(tile))
        for mx0, my0, mx1, my1 in plan.mask_xyxy:
            tile[int(np.floor(my0)):int(np.ceil(my1)), int(np.floor(mx0)):int(np.ceil(mx1))] = fill
    if plan.scale != 1.0:
        tile = resize_area(tile, plan.scale)
    return tile


def resize_area(pixels: np.ndarray, scale: float) -> np.ndarray:
    """Shrink ``[H, W]`` by ``scale`` with area averaging (OpenCV ``INTER_AREA``); sizes rounded, at least 1 px."""
    import cv2

    height, width = pixels.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.ascontiguousarray(pixels, dtype=np.float32), size, interpolation=cv2.INTER_AREA)


def slice_windows(height: int, width: int, tile_size: int, overlap: float) -> np.ndarray:
    """Overlapping ``tile_size`` windows covering a film, as SAHI's ``get_slice_bboxes`` lays them out.

    Windows step by ``tile_size - int(overlap * tile_size)``; the last one in each row and column is
    moved back to end at the film's edge. A film smaller than a tile gets one window from the origin
    (padded by :func:`cut_tile`).

    Returns:
        ``int64 [T, 4]`` windows ``(x0, y0, x0 + tile_size, y0 + tile_size)``.
    """
    if not 0 <= overlap < 1:
        raise UserInputError("overlap must be in [0, 1)", field="overlap", value=overlap)
    step = tile_size - int(overlap * tile_size)

    def starts(size: int) -> list[int]:
        if size <= tile_size:
            return [0]
        out = list(range(0, size - tile_size, step))
        return [*out, size - tile_size]

    return np.array([(x, y, x + tile_size, y + tile_size) for y in starts(height) for x in starts(width)],
                    dtype=np.int64)


def record_film_boxes(record, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``([N, 4] float32 film boxes clipped to the film, [N] category ids)`` of objects with area inside it."""
    boxes = np.array([o.bbox_xyxy for o in record.objects], dtype=np.float64).reshape(-1, 4)
    ids = np.array([o.category_id for o in record.objects], dtype=np.int64)
    clipped, fraction = clip_to_window(boxes, (0, 0, width, height))
    keep = fraction > 0
    return clipped[keep].astype(np.float32), ids[keep]


def plan_dataset_tiles(sizes: Sequence[tuple[int, int]], annotations: Sequence[tuple[np.ndarray, np.ndarray]],
                       config: TileConfig, seed: int) -> list[list[TilePlan]]:
    """Tile plans of every film: positives per object, negatives spread over films at random.

    Negative tiles number ``round(negative_ratio x positive tiles)`` and go to films drawn uniformly
    (with replacement). Each film's tiles come from its own generator (``seed``, film index), so a plan
    does not depend on how the other films fared.

    Args:
        sizes: ``(height, width)`` per film.
        annotations: ``(boxes [N, 4], category ids [N])`` per film (film pixels).
        config: the tiling.
        seed: the run's seed.

    Returns:
        One list of plans per film (whole-film plan last when enabled).
    """
    plans = []
    for index, ((height, width), (boxes, ids)) in enumerate(zip(sizes, annotations, strict=True)):
        rng = np.random.default_rng((seed, index, 0))
        plans.append(plan_film_tiles(height, width, boxes, ids, config, rng))
    negatives_total = round(config.negative_ratio * sum(len(p) for p in plans))
    if sizes and negatives_total:
        films = np.random.default_rng((seed, len(sizes), 1)).integers(0, len(sizes), negatives_total)
        for index, count in enumerate(np.bincount(films, minlength=len(sizes))):
            if count:
                (height, width), (boxes, _) = sizes[index], annotations[index]
                rng = np.random.default_rng((seed, index, 2))
                plans[index].extend(plan_negative_tiles(height, width, boxes, config, rng, int(count)))
    if config.include_whole_films:
        for index, ((height, width), (boxes, ids)) in enumerate(zip(sizes, annotations, strict=True)):
            plans[index].append(whole_film_plan(height, width, boxes, ids, config.tile_size))
    return plans


def count_tiles(plans: Sequence[Sequence[TilePlan]]) -> dict[str, int]:
    """``{"positive", "negative", "whole_film", "objects"}`` counts of a dataset's plans."""
    flat = [p for film in plans for p in film]
    return {
        "positive": sum(1 for p in flat if p.kind == "tile" and len(p.category_ids)),
        "negative": sum(1 for p in flat if p.kind == "tile" and not len(p.category_ids)),
        "whole_film": sum(1 for p in flat if p.kind == "film"),
        "objects": sum(len(p.category_ids) for p in flat),
    }


def write_tile_dataset(datasets, config: TileConfig, root: Path, *, seed: int, bit_depth: int = 16,
                       categories=None, reuse_existing: bool = False, workers: int = 1) -> tuple[Any, dict[str, int]]:
    """Cut every film of ``datasets`` into tiles written under ``root``; return them as one dataset.

    Args:
        datasets: the training sets (films in full-film coordinates).
        config: the tiling.
        root: an empty folder owned by the caller.
        seed: the run's seed (tile positions).
        bit_depth: 16 (float detectors) or 8 (Ultralytics reads 8 bits; written with the same rounding
            its prediction path uses).
        categories: the category table of the tile dataset (default: the first dataset's).
        reuse_existing: a film whose tiles are all in ``root`` already (from an interrupted cut of the
            same plans; tiles are written atomically, so a file that exists is whole) is not read
            again; its records are rebuilt from the plans and the tiles' headers.
        workers: processes that read and cut films (1: in this process). The tiles and records do not
            depend on it: plans are drawn before any film is read.

    Returns:
        ``(tiles, counts)``: a :class:`~rfo_bench.io.records.DetectionDataset` of the tiles (boxes in
        tile pixels) and :func:`count_tiles` of the plans.
    """
    from rfo_bench.io.formats import fill_image_sizes
    from rfo_bench.io.headers import image_size
    from rfo_bench.io.records import DetectionDataset, ImageRecord, RFOObject

    films = []
    for dataset in datasets:
        filled = fill_image_sizes(dataset)
        films.extend((filled, record) for record in filled.images)
    sizes = [(int(r.height), int(r.width)) for _, r in films]
    annotations = [record_film_boxes(r, h, w) for (_, r), (h, w) in zip(films, sizes, strict=True)]
    plans = plan_dataset_tiles(sizes, annotations, config, seed)
    names = [[f"f{index:06d}_t{k:03d}.png" for k in range(len(film_plans))] for index, film_plans in enumerate(plans)]
    shapes: dict[int, list[tuple[int, int]]] = {}
    jobs = []
    for index, ((dataset, record), film_plans) in enumerate(zip(films, plans, strict=True)):
        if not film_plans:
            continue
        if reuse_existing and all((root / name).is_file() for name in names[index]):
            shapes[index] = [image_size(root / name)[::-1] for name in names[index]]  # header (width, height)
        else:
            jobs.append((index, dataset.resolve(record), config.window_percentiles, film_plans, names[index], root,
                         bit_depth))
    reused = len(shapes)
    for index, film_shapes in _run_cut_jobs(jobs, workers):
        shapes[index] = film_shapes
    records = []
    for index, ((_, record), film_plans) in enumerate(zip(films, plans, strict=True)):
        for plan, name, (tile_h, tile_w) in zip(film_plans, names[index], shapes.get(index, []), strict=True):
            objects = tuple(RFOObject(tuple(float(v) for v in box), int(cid))  # type: ignore[arg-type]
                            for box, cid in zip(plan.boxes_xyxy, plan.category_ids, strict=True))
            records.append(ImageRecord(name, len(records) + 1, width=int(tile_w), height=int(tile_h),
                                       patient_id=record.patient_id, objects=objects))
    table = categories if categories is not None else (datasets[0].categories if datasets else ())
    counts = count_tiles(plans)
    logger.info("cut %d tiles (%d positive, %d negative, %d whole films) from %d films%s", len(records),
                counts["positive"], counts["negative"], counts["whole_film"], len(films),
                f" ({reused} films' tiles kept from an interrupted cut)" if reused else "")
    tiles = DetectionDataset(root, tuple(records), tuple(table), source=f"tiles of {len(films)} films")
    return tiles, counts


def _cut_film(job) -> tuple[int, list[tuple[int, int]]]:
    """Read one film, window it, write its tiles; ``(film index, [(height, width)] per tile)``."""
    from rfo_bench.io.images import read_image, write_png8, write_png16

    index, path, window_percentiles, film_plans, names, root, bit_depth = job
    writer = write_png16 if bit_depth == 16 else write_png8
    film = window_film(read_image(path).pixels, window_percentiles)
    shapes = []
    for plan, name in zip(film_plans, names, strict=True):
        tile = cut_tile(film, plan)
        writer(root / name, tile)
        shapes.append((int(tile.shape[0]), int(tile.shape[1])))
    return index, shapes


def _run_cut_jobs(jobs: list, workers: int) -> Iterator[tuple[int, list[tuple[int, int]]]]:
    """:func:`_cut_film` over ``jobs``, in this process or in ``workers`` processes (forked where possible)."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_cut_film, jobs)
        return
    from toolkit_core.processes import process_pool

    with process_pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_cut_film, jobs)
