"""Shared fixtures: the real model bundle built by `scripts/setup.sh` (or `perceptd export`)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.rigs.fixtures"]

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that reaches the exported bundle (the `bundle_dir` fixture, directly or through
    another fixture) is marked `bundle`: `pytest tests/unit -m "not bundle"` runs without an
    export.  Tests that read the bundle otherwise carry the mark themselves."""
    for item in items:
        if "bundle_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.bundle)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    """The active bundle, verified (sha256 + parity) exactly as the daemon would."""
    from perceptd.daemon.bundle import BundleError, resolve_bundle, verify_bundle

    try:
        return verify_bundle(resolve_bundle(REPO / "bundle", "current")).path
    except BundleError as exc:
        pytest.fail(f"no usable bundle ({exc}); run scripts/setup.sh or `perceptd export`")


@pytest.fixture(scope="session")
def bundle(bundle_dir: Path):
    from perceptd.daemon.bundle import verify_bundle

    return verify_bundle(bundle_dir)


@pytest.fixture(scope="session")
def default_config():
    from perceptd.daemon.config import load_config

    return load_config(REPO / "config.yaml")
