"""Loads libreach_ops.so, the project's TORCH_LIBRARY ops, into torch.ops.reach."""

import os

import torch

_ENV = "REACH_OPS_LIBRARY"


def library_path() -> str:
    """The op library this package loads: $REACH_OPS_LIBRARY if set (a libreach_ops.so built
    by the project's CMake), else the one pip installed beside this file."""
    return os.environ.get(_ENV) or os.path.join(os.path.dirname(__file__), "libreach_ops.so")


def load() -> str:
    path = library_path()
    if not os.path.isfile(path):
        raise ImportError(
            f"reach: no op library at {path}; install the package with "
            f"`pip install --no-build-isolation ./python` (it builds libreach_ops.so against "
            f"the installed torch) or point {_ENV} at a libreach_ops.so"
        )
    torch.ops.load_library(path)
    return path
