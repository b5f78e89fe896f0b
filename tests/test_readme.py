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
