"""The README's install and test commands are exactly what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block_after(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for line in _block_after("Install") + _block_after("Test"):
        assert line in ci, f"README command not run by .ci/run: {line}"


def test_readme_opens_with_install_then_demo_then_test():
    text = (ROOT / "README.md").read_text()
    order = [text.index("## Install"), text.index("## Run the demo"), text.index("## Test")]
    assert order == sorted(order)
    assert "kdlab demo" in _block_after("Run the demo")
