"""The README's "Python and notebooks" section runs as written.

Every ```python block of that section is executed in order, in one namespace, in a fresh
interpreter. The only change made to the text: the example run directory
``"runs/shapes-20261123-101500"`` (it must occur exactly once) is replaced by the path of a
finished ``shapes_tiny`` run made for the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

SECTION = "## Python and notebooks"
EXAMPLE_RUN = '"runs/shapes-20261123-101500"'


def python_section(readme: str) -> str:
    """The text from the section's heading to the next ``## `` heading."""
    start = readme.index(SECTION + "\n")
    end = readme.find("\n## ", start + len(SECTION))
    return readme[start : end if end != -1 else len(readme)]


def python_blocks(section: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)


def test_the_section_has_the_examples_this_test_relies_on():
    section = python_section((REPO / "README.md").read_text(encoding="utf-8"))
    blocks = python_blocks(section)
    assert len(blocks) >= 2
    assert "".join(blocks).count(EXAMPLE_RUN) == 1
    assert "## Experiments" not in section


def test_readme_python_section_runs_verbatim(tiny_run, tmp_path):
    section = python_section((REPO / "README.md").read_text(encoding="utf-8"))
    code = "\n".join(python_blocks(section)).replace(EXAMPLE_RUN, repr(str(tiny_run)))
    script = tmp_path / "readme_python.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "['circle', 'square', 'triangle'] 32" in done.stdout
