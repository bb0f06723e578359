"""What the tests share: the fake upstreams, the routes and models several modules use, and the
paths of the repository and its test data. No test module imports another; they import from here
and from conftest."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DATA = REPO / "tests" / "data"
