"""Make the repository root importable (`isa`, `compiler`, `runtime`) without installing dsc."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


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
