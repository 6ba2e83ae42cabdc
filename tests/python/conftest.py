"""Loads libsubq_torch.so (path in SUBQ_TORCH_LIB, set by CTest) into torch.ops.subq."""
import os

import pytest
import torch


def pytest_configure(config):
    lib = os.environ.get("SUBQ_TORCH_LIB")
    if not lib or not os.path.exists(lib):
        raise pytest.UsageError(
            f"SUBQ_TORCH_LIB must name the built libsubq_torch.so (got {lib!r}); run through ctest")
    torch.ops.load_library(lib)
    torch.manual_seed(0)
