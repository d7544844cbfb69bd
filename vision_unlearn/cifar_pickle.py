"""Reading the CIFAR-10/100 python batches without running code from them.

The CIFAR distribution format is a Python pickle, and un-pickling a crafted file can run any code it
names. :func:`read_cifar_batch` uses an unpickler that builds only what a CIFAR batch holds (dicts,
lists, numbers, strings, NumPy arrays) and refuses every other global before it is looked up.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError

CIFAR_MAX_BYTES = 1 << 30
"""Largest CIFAR pickle read (1 GiB; the CIFAR-100 ``train`` file, the largest, is 155 MB)."""

CIFAR_GLOBALS = frozenset({
    # what a NumPy array pickles to: protocols 0-4 (NumPy 1.x module names and NumPy 2.x ones) and 5
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes ``bytes`` at protocol 2 (the CIFAR files use protocol 2)
})
"""Every global a CIFAR batch may name; dicts, lists, numbers and strings need none."""


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside :data:`CIFAR_GLOBALS`."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only what CIFAR batches hold: dicts, lists, strings, numbers, arrays.

    Any other global a pickle names (a function to call, a class to build) is refused, so a crafted
    file cannot run code; the check happens before the global is looked up.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_GLOBALS:
            raise _RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(file: Path) -> dict[bytes, Any]:
    """Read one CIFAR python batch with :class:`_CifarUnpickler` (nothing in the file runs).

    Raises:
        UserInputError: unreadable, oversized, damaged, not a dict, or naming a refused global.
    """
    try:
        size = file.stat().st_size
        if size > CIFAR_MAX_BYTES:
            raise UserInputError(f"CIFAR batch is {size / 2**20:.0f} MiB, more than the "
                                 f"{CIFAR_MAX_BYTES >> 20} MiB a batch can be", file=file)
        with open(file, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
    except UserInputError:
        raise
    except _RefusedGlobal as err:
        raise UserInputError(f"refused: the pickle names {err}, which a CIFAR batch never holds (loading it "
                             "could run code)", file=file) from None
    except Exception as err:  # a damaged pickle raises many types (EOFError, ValueError, KeyError, ...)
        raise UserInputError(f"cannot read CIFAR batch ({type(err).__name__}: {err})", file=file) from None
    if not isinstance(batch, dict):
        raise UserInputError(f"a CIFAR batch is a dict, this file holds a {type(batch).__name__}", file=file)
    return batch
