"""The README shows the screenshots the browser test saves: every picture exists, under a name it gives."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_pictures_are_the_browser_tests_screenshots():
    readme = (ROOT / "README.md").read_text()
    pictures = re.findall(r"\(docs/screenshots/([^)]+\.png)\)", readme)
    assert len(pictures) >= 6
    source = (ROOT / "tests" / "test_browser.py").read_text()
    # `_shot(server, page, "b-poisoned-run-failure")` or f"d-timeline-{...}": the literal part of each name
    names = [re.escape(lit) + (".+" if rest else "") for lit, rest in
             re.findall(r'_shot\(server, page, f?"([^"{]*)(\{)?', source)]
    assert names, "no _shot(...) calls found in tests/test_browser.py"
    for picture in pictures:
        assert (ROOT / "docs" / "screenshots" / picture).is_file(), picture
        assert any(re.fullmatch(n, picture[: -len(".png")]) for n in names), f"{picture} is not a name the test saves"
    kept = {p.name for p in (ROOT / "docs" / "screenshots").glob("*.png")}
    assert kept == set(pictures), f"unused screenshots in docs/screenshots: {sorted(kept - set(pictures))}"
