"""docs/embedding.md quotes the example host: its quotes must stay true.

Every ```python-fragment block preceded by ``<!-- excerpt: PATH -->`` must
appear, as is, in that file; and the guide names every module of the host.
(The ```python blocks of the guide run in tests/test_docs.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "embedding.md"
_EXCERPT = re.compile(
    r"^<!-- excerpt: (\S+) -->\n```python-fragment\n(.*?)^```$", re.MULTILINE | re.DOTALL
)


def _excerpts() -> list[tuple[str, str]]:
    return _EXCERPT.findall(GUIDE.read_text(encoding="utf-8"))


def test_the_guide_quotes_the_host() -> None:
    assert len(_excerpts()) >= 8


@pytest.mark.parametrize(("path", "code"), _excerpts(), ids=lambda v: v.splitlines()[0][:40])
def test_excerpt_is_verbatim(path: str, code: str) -> None:
    source = (ROOT / path).read_text(encoding="utf-8")
    assert code in source, f"docs/embedding.md quotes {path}, which no longer has:\n{code}"


def test_every_fragment_says_where_it_comes_from() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert text.count("```python-fragment") == len(_excerpts())


def test_the_guide_walks_through_every_module() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    for module in sorted((ROOT / "examples" / "minicoder").glob("*.py")):
        if module.name != "__init__.py":
            assert module.name in text, module.name
