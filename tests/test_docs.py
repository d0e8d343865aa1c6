"""The README stays true: its policy example parses and matches the shipped file."""

from __future__ import annotations

import re
from pathlib import Path

from monitor.policy import load_policy, parse_policy
from monitor.verdicts import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_policy_is_the_example_file_and_valid() -> None:
    example = ROOT / "examples" / "policy.toml"
    block = re.search(r"```toml\n(# A release policy.*?)```", README, re.DOTALL)
    assert block is not None, "README lost its annotated policy example"
    assert block.group(1) == example.read_text(encoding="utf-8")
    config = load_policy(example)
    assert set(config.services) == {"shop", "checkout"}
    assert parse_policy(block.group(1), "README.md").services["shop"].signals


def test_the_readme_documents_every_verdict_exit_code() -> None:
    table = README[README.index("### Exit codes"):]
    for verdict, code in EXIT_CODES.items():
        assert re.search(rf"^\| {code} \| {verdict}", table, re.MULTILINE), verdict


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = re.search(r"```sh\n(pip install -e '\.\[test\]'.*)\n```", README)
    assert command is not None
    assert command.group(1) in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
