"""Docstrings and comments of hf_pept (every subpackage), the kernels and the app point at files that exist, and not at
issue numbers (the issue tracker is not part of the repository)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["hf_pept", "kernels", "app"]
SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))
TOP_LEVEL = {entry.name for entry in ROOT.iterdir()}
FILE_MENTION = re.compile(r"(?:\.\./)*[\w.-]+(?:/[\w.-]+)*\.(?:py|md|csv|json|toml|sh)\b")
ISSUE_MENTION = re.compile(r"\bissues?\s*#?\d+|(?<![\w&])#\d+\b", re.IGNORECASE)


def _missing_files(source: Path) -> list[str]:
    missing = []
    for mention in FILE_MENTION.findall(source.read_text()):
        if mention.startswith("../"):
            candidates = [source.parent / mention]
        elif "/" in mention:
            if mention.split("/")[0] not in TOP_LEVEL:
                continue  # another project's path (e.g. the Fira authors' code)
            candidates = [ROOT / mention]
        elif mention.endswith((".py", ".md")):
            candidates = [source.parent / mention, ROOT / mention]
        else:
            continue  # a file name written at run time (adapter_config.json, ...)
        if not any(candidate.resolve().exists() for candidate in candidates):
            missing.append(mention)
    return missing


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_pointers_name_existing_files_and_no_issue_numbers(source):
    assert _missing_files(source) == []
    assert ISSUE_MENTION.findall(source.read_text()) == []


def test_the_check_catches_a_stale_pointer(tmp_path):
    stale = tmp_path / "stale.py"
    stale.write_text('"""Checked by ``tests/galore/test_nowhere.py``; see ../shared/NOWHERE.md (issue 4)."""\n')
    assert _missing_files(stale) == ["tests/galore/test_nowhere.py", "../shared/NOWHERE.md"]
    assert ISSUE_MENTION.findall(stale.read_text()) == ["issue 4"]
