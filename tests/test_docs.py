"""The documentation site builds with warnings as errors, and every Python block of the guide and the README
runs on the CPU (a block that cannot starts with a `# not run:` line saying why)."""

from __future__ import annotations

import re
import textwrap
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs" / "src").glob("*.md")) + [ROOT / "README.md"]
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def python_blocks():
    for page in PAGES:
        for index, match in enumerate(BLOCK.finditer(page.read_text())):
            yield pytest.param(textwrap.dedent(match.group(2)), id=f"{page.relative_to(ROOT)}#{index}")


def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=600,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "SuccessiveHalvingTuner" in api and "nested_compare" in api and "convert" in api
    assert (tmp_path / "site" / "results" / "digits" / "report.md").is_file() or (
        tmp_path / "site" / "results" / "digits" / "report" / "index.html").is_file()


@pytest.mark.parametrize("code", list(python_blocks()))
def test_python_blocks_run(code, tmp_path, monkeypatch):
    if code.lstrip().startswith("# not run:"):
        pytest.skip(code.strip().splitlines()[0])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs>", "exec"), {"__name__": "__docs__"})  # noqa: S102 (our own documentation)
