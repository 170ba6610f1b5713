"""The README quotes the commands and timings that benchmarks/RESULTS.md records."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def recorded_timings() -> list[tuple[str, str, str]]:
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    block = re.search(r"<!-- timings -->(.*?)<!-- end timings -->", text, re.S)
    assert block, "benchmarks/RESULTS.md has no timings block"
    rows = []
    for line in block.group(1).strip().splitlines()[2:]:  # after the header and rule
        what, command, measured = (c.strip() for c in line.strip("|").split("|"))
        rows.append((what, command.strip("`"), measured))
    return rows


def test_every_recorded_timing_is_quoted_with_its_command() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = recorded_timings()
    assert {what for what, _, _ in rows} >= {"main job", "default test suite"}
    for what, command, measured in rows:
        assert command in readme, f"README does not show the {what} command {command!r}"
        assert measured in readme, f"README does not quote the {what} time {measured!r}"


def test_the_readme_set_up_commands_are_the_recorded_ones() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block
    setup = first_block.group(1).strip().splitlines()
    assert len(setup) == 2
    recorded = {what: command for what, command, _ in recorded_timings()}
    assert setup[0].endswith(recorded["main job"])
    assert setup[1].endswith(recorded["default test suite"])


def test_no_other_time_is_given_for_the_main_job_or_the_suite() -> None:
    """The first paragraph's minute and second figures are the recorded ones."""
    readme = (ROOT / "README.md").read_text()
    intro = readme.split("```", 2)[2].split("\n\n", 2)[1]  # the paragraph after the commands
    recorded = {measured for _, _, measured in recorded_timings()}
    quoted = re.findall(r"\d+(?:\s*(?:to|-)\s*\d+)?\s*(?:minutes|s\b)", intro)
    assert quoted, intro
    for figure in quoted:
        assert any(figure in r for r in recorded), f"README quotes {figure!r}, not recorded"
