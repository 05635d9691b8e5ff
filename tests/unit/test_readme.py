"""The README's commands work as written: every ```sh block after the first (which holds the
two set-up commands CI itself runs) is run line by line against a live notifier, with only
REDIS_URL, the token and the API's address set for this run."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_first_block_is_the_two_commands() -> None:
    first = BLOCK.findall(README.read_text())[0]
    assert [line.split()[0] for line in first.strip().splitlines()] == [
        "scripts/demo",
        "scripts/test",
    ]
