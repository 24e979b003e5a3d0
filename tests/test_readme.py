"""The usage example in README.md runs as written."""

import re
from pathlib import Path

import pytest


def test_readme_usage_example_runs():
    path = Path(__file__).resolve().parents[1] / "README.md"
    if not path.exists():
        pytest.skip("needs the source tree (README.md)")
    readme = path.read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
