"""Every ```python block in docs/**/*.md runs as is.

Each block is executed on its own, in a fresh namespace, from a temporary
working directory. Blocks fenced as ```python-fragment are not run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

# A fence opens at the start of a line with exactly "```python" and closes at
# the next line that is only "```". "```python-fragment" does not match.
_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_OPENING = re.compile(r"^```python[ \t]*$", re.MULTILINE)


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _blocks() -> Iterator[object]:
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # first line of code
            name = f"{page.relative_to(DOCS).as_posix()}:{line}"
            yield pytest.param(page, line, match.group(1), id=name)


def test_docs_have_examples() -> None:
    assert _pages(), f"no pages under {DOCS}"
    assert list(_blocks()), "no ```python block found in the docs"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_python_fence_is_closed(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert len(_OPENING.findall(text)) == len(_BLOCK.findall(text))


@pytest.mark.parametrize(("page", "line", "code"), list(_blocks()))
def test_example_runs(
    page: Path, line: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # Pad with blank lines so that tracebacks point at the line in the page.
    compiled = compile("\n" * (line - 1) + code, str(page), "exec")
    exec(compiled, {"__name__": "__docs_example__"})
