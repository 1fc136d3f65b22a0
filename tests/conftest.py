"""Make the repository root importable (`isa`, `compiler`, `runtime`) without installing dsc,
and set the property tests' profile."""
import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = str(Path(__file__).resolve().parent.parent)
# Kernel simulations are kept in memory only: tests never read or write the user's cache
# directory (tests/test_sim_cache.py points it at a temporary one).
os.environ["DSC_CACHE"] = "off"
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Property tests: in CI (CI=true) each runs the same examples every time, so a red run can be
# reproduced and main stays green on its own; on a developer's machine they explore. Health
# checks about how examples are generated (their size, their speed) differ between hypothesis
# releases and say nothing about dsc, so they are off.
settings.register_profile(
    "dsc", derandomize=os.environ.get("CI", "").lower() in ("1", "true", "yes"),
    suppress_health_check=[HealthCheck.data_too_large, HealthCheck.too_slow])
settings.load_profile("dsc")


# Golden files: tests compare generated text byte for byte with files under tests/golden/;
# `pytest --update-golden` rewrites them instead (review the diff before committing).
import pytest  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files under tests/golden/ instead of comparing")


@pytest.fixture
def golden(request):
    """`golden(path, text)`: assert text equals the file, or write it under --update-golden."""
    update = request.config.getoption("--update-golden")

    def check(path: Path, text: str) -> None:
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            return
        assert path.is_file(), f"missing golden file {path}; run pytest --update-golden"
        assert text == path.read_text(), f"{path} differs; run pytest --update-golden if intended"
    return check
