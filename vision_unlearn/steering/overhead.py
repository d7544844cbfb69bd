"""What steering costs at inference: time per batch with the hooks on and off."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vision_unlearn.steering.hooks import ActivationSteerer
from vision_unlearn.steering.layers import device_of


@torch.no_grad()
def measure_overhead(model: nn.Module, images: Tensor, steerer: ActivationSteerer, repeats: int = 20,
                     warmup: int = 3, clock: Callable[[], float] | None = None) -> dict[str, float]:
    """Time per batch of ``model(images)`` with the hook enabled vs disabled (interleaved runs).

    Each repeat times one pass without and one with the hook back to back (alternating which goes
    first), so both see the same load of a shared machine; the overhead is the median of the
    per-pair ratios, which is robust to load that drifts between pairs. On the CPU the default
    clock is this process's CPU time (:func:`time.process_time`), which other processes do not
    inflate; on a GPU it is the wall clock with a synchronisation after each pass.

    Returns:
        ``{"ms_per_batch_off", "ms_per_batch_on", "overhead", "fastest_ms_off", "fastest_ms_on"}``:
        median and fastest times, and ``overhead = median(on_i / off_i) - 1`` (0.05 means 5 %
        slower). The hook is left enabled afterwards.
    """
    was_training = model.training
    model.eval()
    images = images.to(device_of(model))
    if clock is None:
        clock = time.perf_counter if images.is_cuda else time.process_time
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(warmup + repeats):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                steerer.enabled = on
                start = clock()
                model(images)
                if images.is_cuda:
                    torch.cuda.synchronize(images.device)
                if i >= warmup:
                    times[on].append(clock() - start)
    finally:
        steerer.enabled = True
        model.train(was_training)
    off, on = torch.tensor(times[False], dtype=torch.float64), torch.tensor(times[True], dtype=torch.float64)
    return {"ms_per_batch_off": float(off.median()) * 1e3, "ms_per_batch_on": float(on.median()) * 1e3,
            "overhead": float((on / off).median()) - 1.0, "fastest_ms_off": float(off.min()) * 1e3,
            "fastest_ms_on": float(on.min()) * 1e3}
