"""Fuzzing options and the targets module (loaded by path: tests are imported in importlib mode)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-seconds",
        type=float,
        default=0.0,
        help="generate inputs for this long per target (0: replay the corpus and a short run)",
    )


@pytest.fixture(scope="session")
def fuzz_seconds(request: pytest.FixtureRequest) -> float:
    # default: the option exists only when tests/fuzz is named on the command line
    return float(request.config.getoption("--fuzz-seconds", default=0.0))


def load_targets() -> ModuleType:
    name = "cinebridge_fuzz_targets"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def targets() -> ModuleType:
    return load_targets()
