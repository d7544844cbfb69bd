"""Benchmark of 16-bit PNG writing: our encoder (Sub filter + ISA-L deflate) against Pillow and OpenCV.

Usage::

    .venv/bin/python benchmarks/bench_png16.py [--size 2048] [--films 4] [--repeats 3] [--e2e-films 4] \\
        [--out runs/bench_png16.json]

Run it with ``OMP_NUM_THREADS=1`` on an otherwise idle machine; the figures to compare are CPU seconds
(``time.process_time``), which a busy machine inflates less than wall time.

Two measurements (JSON on stdout and in ``--out``):

* ``encode``: realistic films, rendered by the physics generator at ``size²`` (the embedded PA chest
  radiograph, 1-3 objects, quantum noise on: what ``rfo-synth physics`` writes), each encoded by every
  writer below; CPU seconds per film (quantisation to ``uint16`` and encoding, the file write left out)
  and bytes per film. Every writer's file is decoded again and checked to hold the same ``uint16``
  samples as :func:`rfo_bench.io.images.to_uint16`.
* ``end_to_end``: ``generate_dataset`` (what ``rfo-synth physics --workers 1`` runs: rendering,
  labels, writing) with ``rfo_bench.io.images.write_png16`` replaced by each writer in turn; CPU
  seconds per film (the run's set-up, about 3 s, included and the same for every writer) after a
  warm-up run, the writers interleaved over ``--repeats`` rounds, the median reported, and how much more
  CPU each writer's run takes than with ``ours_isal``.

Writers:

* ``ours_isal`` — :func:`rfo_bench.io.images.encode_png16`: Sub filter on every row, ISA-L level 1;
* ``ours_zlib_rle`` — the same Sub-filtered rows deflated by the standard library's zlib (level 1,
  ``Z_RLE``): what the encoder would cost without the ``isal`` dependency;
* ``pillow`` — ``PIL.Image.fromarray(uint16).save(format="PNG", compress_level=1)`` (Pillow picks the
  filter per row);
* ``opencv`` — ``cv2.imencode(".png", uint16)`` with OpenCV's defaults (compression 1, RLE strategy);
* ``opencv_huffman`` — the same with ``IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY``, OpenCV's fastest setting
  of equal size.

Last run (``--size 2048 --films 4 --repeats 2 --e2e-films 8``, one thread, Python 3.11, Pillow 13.0,
OpenCV 5.1, a shared 2-core x86-64 machine): CPU seconds per film to encode / end to end per film
(more than ``ours_isal``) / MB per film:

===============  ======  ================  =====
ours_isal        0.037   0.454             6.49
ours_zlib_rle    0.085   0.518 (+14%)      6.49
opencv_huffman   0.161   0.601 (+32%)      6.41
opencv           0.263   0.711 (+57%)      6.60
pillow           0.325   0.753 (+66%)      6.60
===============  ======  ================  =====

All five decode to the same ``uint16`` samples and sizes differ by under 3%, so the encoder is the
only difference: Pillow or OpenCV would make ``rfo-synth physics`` a third to two thirds slower per
film, the standard library's zlib in our encoder a seventh.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _encode_ours(pixels: np.ndarray) -> bytes:
    from rfo_bench.io.images import encode_png16

    return encode_png16(pixels)


def _encode_sub_zlib_rle(pixels: np.ndarray) -> bytes:
    """Our encoder's bytes layout (Sub filter, one IDAT) with the stdlib's zlib instead of ISA-L."""
    from rfo_bench.io.images import to_uint16

    height, width = pixels.shape
    samples = to_uint16(pixels).astype(">u2").view(np.uint8).reshape(height, 2 * width)
    rows = np.empty((height, 2 * width + 1), dtype=np.uint8)
    rows[:, 0] = 1
    rows[:, 1:3] = samples[:, :2]
    np.subtract(samples[:, 2:], samples[:, :-2], out=rows[:, 3:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    idat = deflate.compress(rows.data) + deflate.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _encode_pillow(pixels: np.ndarray) -> bytes:
    from PIL import Image

    from rfo_bench.io.images import to_uint16

    buffer = io.BytesIO()
    Image.fromarray(to_uint16(pixels)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _opencv(strategy: int | None) -> Callable[[np.ndarray], bytes]:
    def encode(pixels: np.ndarray) -> bytes:
        import cv2

        from rfo_bench.io.images import to_uint16

        params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
        if strategy is not None:
            params += [cv2.IMWRITE_PNG_STRATEGY, strategy]
        ok, encoded = cv2.imencode(".png", to_uint16(pixels), params)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        return encoded.tobytes()

    return encode


def writers() -> dict[str, Callable[[np.ndarray], bytes]]:
    import cv2

    return {
        "ours_isal": _encode_ours,
        "ours_zlib_rle": _encode_sub_zlib_rle,
        "pillow": _encode_pillow,
        "opencv": _opencv(None),
        "opencv_huffman": _opencv(cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY),
    }


def _decode(data: bytes) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)


def render_films(size: int, n: int) -> list[np.ndarray]:
    """``n`` radiographs of the physics generator at ``size²`` (float ``[0, 1]``)."""
    from synth.physics.generate import PhysicsConfig, build_renderer

    renderer = build_renderer(PhysicsConfig(mode="radiograph", size=size, max_objects=3, negative_fraction=0.0))
    return [renderer.render(np.random.default_rng(i))[0] for i in range(n)]


def bench_encode(films: list[np.ndarray], repeats: int) -> dict[str, dict[str, float]]:
    from rfo_bench.io.images import to_uint16

    report = {}
    for name, encode in writers().items():
        encode(films[0])  # imports and first-call set-up out of the timing
        seconds, sizes = [], []
        for film in films:
            expected = to_uint16(film)
            data = encode(film)
            if not np.array_equal(_decode(data), expected):
                raise AssertionError(f"{name}: the decoded PNG differs from to_uint16")
            sizes.append(len(data))
            start = time.process_time()
            for _ in range(repeats):
                encode(film)
            seconds.append((time.process_time() - start) / repeats)
        report[name] = {"cpu_seconds_per_film": round(statistics.mean(seconds), 4),
                        "mb_per_film": round(statistics.mean(sizes) / 1e6, 3)}
    return report


def bench_end_to_end(size: int, n: int, repeats: int) -> dict[str, dict[str, float]]:
    import rfo_bench.io.images as images
    from synth.physics.generate import PhysicsConfig, generate_dataset
    from toolkit_core.utils import atomic_output

    config = PhysicsConfig(mode="radiograph", size=size, max_objects=3, negative_fraction=0.0)
    original = images.write_png16

    def as_writer(encode: Callable[[np.ndarray], bytes]):
        def write(path, pixels, compress_level: int = 1) -> Path:
            target = Path(path)
            data = encode(pixels)
            with atomic_output(target) as tmp:
                tmp.write_bytes(data)
            return target

        return write

    chosen = {name: as_writer(encode) for name, encode in writers().items()}
    chosen["ours_isal"] = original  # the real write_png16, untouched
    cpu: dict[str, list[float]] = {name: [] for name in chosen}
    sizes: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            generate_dataset(Path(tmp) / "warm", n=2, seed=0, config=config, workers=1, progress=False)
            for round_ in range(repeats):
                for name, write in chosen.items():
                    images.write_png16 = write  # generate.py imports it from the module at call time
                    out = Path(tmp) / f"{name}{round_}"
                    start = time.process_time()
                    generate_dataset(out, n=n, seed=0, config=config, workers=1, progress=False)
                    cpu[name].append((time.process_time() - start) / n)
                    sizes[name] = sum(p.stat().st_size for p in (out / "images").glob("*.png")) / n / 1e6
    finally:
        images.write_png16 = original
    base = statistics.median(cpu["ours_isal"])
    return {name: {"cpu_seconds_per_film": round(statistics.median(values), 4),
                   "more_than_ours_isal": round(statistics.median(values) / base - 1.0, 3),
                   "cpu_seconds_per_film_rounds": [round(v, 4) for v in values],
                   "mb_per_film": round(sizes[name], 3)} for name, values in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="film side in pixels")
    parser.add_argument("--films", type=int, default=4, help="films encoded by every writer")
    parser.add_argument("--repeats", type=int, default=3, help="encodings per film / end-to-end rounds")
    parser.add_argument("--e2e-films", type=int, default=4, help="films per end-to-end run (0 = skip)")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args()

    import cv2
    import PIL

    films = render_films(args.size, args.films)
    report = {
        "size": args.size, "films": args.films, "repeats": args.repeats,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "pillow": PIL.__version__,
                    "opencv": cv2.__version__, "load_average_1min": round(os.getloadavg()[0], 2)},
        "encode": bench_encode(films, args.repeats),
    }
    print(json.dumps(report["encode"]), flush=True)
    if args.e2e_films > 0:
        report["end_to_end"] = bench_end_to_end(args.size, args.e2e_films, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
