"""The console's template environment: every template compiles, and escapes by default."""

from __future__ import annotations

import pytest
from markupsafe import escape

from gateway.console.templating import (
    TEMPLATES_DIR,
    build_environment,
    path_part,
    pretty_json,
    with_query,
)

TEMPLATES = sorted(p.name for p in TEMPLATES_DIR.glob("*.html"))


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_compiles(name: str) -> None:
    build_environment().get_template(name)


def test_the_pages_promised_exist() -> None:
    for page in ("base", "decisions", "decision", "agents", "agent", "approvals", "policy",
                 "tools", "error"):  # fmt: skip
        assert f"{page}.html" in TEMPLATES


@pytest.mark.parametrize(
    "value",
    ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "' onmouseover='x"],
)
def test_text_and_json_are_escaped_whatever_the_template_name(value: str) -> None:
    env = build_environment()
    # Not an .html name: autoescaping must not depend on the extension.
    template = env.from_string('<p title="{{ v }}">{{ v }}</p><pre>{{ d | pretty_json }}</pre>')
    html = template.render(v=value, d={"k": value})
    assert html.count("<") == 4  # the template's own tags, no more
    assert str(escape(value)) in html
    assert value not in html


def test_helpers() -> None:
    assert pretty_json({"b": 1, "a": "é"}) == '{\n  "a": "é",\n  "b": 1\n}'
    assert path_part("a/b?c") == "a%2Fb%3Fc"
    assert with_query({"caller": "x y", "agent": ""}, before=7) == "?caller=x+y&before=7"
    assert with_query({}) == "?"
