"""The README's two set-up commands, and .ci/run running the same test command."""
from __future__ import annotations

import re

from conftest import REPO

README = (REPO / "README.md").read_text()
SETUP = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
COMMANDS = re.findall(r"```sh\n(.*?)\n```", SETUP, re.S)


def test_readme_has_exactly_two_setup_commands():
    assert COMMANDS == ['pip install . && userbpf demo',
                        'pip install ".[test]" && python -m pytest']


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text()
    assert f"'{COMMANDS[1]}'" in ci


def test_readme_map_example_runs_and_gives_what_it_says():
    import pytest
    import userbpf
    block = README.split("Maps live in a simulated kernel", 1)[1].split("```python\n", 1)[1]
    block = block.split("```", 1)[0]
    lookup_missing = next(line for line in block.splitlines() if "ENOENT" in line)
    ns = {"userbpf": userbpf}
    exec(block.replace(lookup_missing, ""), ns)
    assert ns["counts"][443] == 2
    with pytest.raises(FileNotFoundError):
        exec(lookup_missing.split("#")[0].strip(), ns)
    assert ns["k"].fs.listdir() == ["counts"]
