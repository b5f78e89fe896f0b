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


def test_readme_program_example_runs_and_gives_what_it_says():
    import pytest
    import userbpf
    ns = {"userbpf": userbpf}
    maps = README.split("Maps live in a simulated kernel", 1)[1].split("```python\n", 1)[1]
    maps = maps.split("```", 1)[0]
    exec("\n".join(line for line in maps.splitlines() if "ENOENT" not in line), ns)
    block = README.split("Programs are loaded for a program type", 1)[1]
    block = block.split("```python\n", 1)[1].split("```", 1)[0]
    refused = block.split("res.retval", 1)[1].split("\n", 2)[2]
    exec(block.replace(refused, ""), ns)
    assert (ns["res"].retval, ns["res"].data_out) == (2, bytes(60))
    with pytest.raises(OSError) as e:            # test runs need an Ethernet header
        ns["xdp"].test_run(bytes(13))
    assert e.value.errno == 22
    with pytest.raises(PermissionError) as e:
        exec(refused.split("#")[0], ns)
    assert "invalid bpf_context access off=2 size=2" in str(e.value)
