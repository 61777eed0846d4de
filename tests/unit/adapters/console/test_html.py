"""Escaping: whatever a sandbox's driver chose reaches a page as text, in bodies and in attributes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sandbox_lifecycle.adapters.console.html import (
    Markup,
    esc,
    join,
    link,
    page,
    query,
    sandbox_href,
    table,
    tag,
    when,
)


def test_esc_escapes_markup_and_both_quotes() -> None:
    assert (
        esc("<a href=\"x\" title='y'>&</a>")
        == "&lt;a href=&quot;x&quot; title=&#x27;y&#x27;&gt;&amp;&lt;/a&gt;"
    )
    assert esc(None) == ""
    assert esc(42) == "42"


def test_markup_passes_through_once_escaped_text_does_not_double() -> None:
    assert esc(Markup("<b>ok</b>")) == "<b>ok</b>"
    assert esc(esc("<")) == "&lt;"
    assert join(["<", Markup("<i>")]) == "&lt;<i>"


def test_tag_escapes_attribute_values_and_body() -> None:
    out = tag("td", '"><script>x</script>', title='" onmouseover="x', class_="a b", data_state="idle")
    assert out == (
        '<td title="&quot; onmouseover=&quot;x" class="a b" data-state="idle">'
        "&quot;&gt;&lt;script&gt;x&lt;/script&gt;</td>"
    )


def test_tag_leaves_out_none_and_false_attributes() -> None:
    assert tag("option", "x", selected=None, disabled=False, value="") == '<option value="">x</option>'


def test_link_escapes_href() -> None:
    assert link('javascript:"x"', "y") == '<a href="javascript:&quot;x&quot;">y</a>'


def test_sandbox_href_keeps_the_id_one_path_segment() -> None:
    assert sandbox_href("abc") == "sandboxes/abc"
    assert sandbox_href("../a/b?c#d") == "sandboxes/..%2Fa%2Fb%3Fc%23d"


def test_query_drops_empty_values_and_encodes() -> None:
    assert query("./", {"state": "idle", "kind": "", "id": None}) == "./?state=idle"
    assert query("./", {"conversation": "a&b=<c>"}) == "./?conversation=a%26b%3D%3Cc%3E"
    assert query("./", {}) == "./"


@given(st.text())
def test_escaped_text_holds_no_markup_characters(text: str) -> None:
    out = esc(text)
    assert not any(c in out for c in "<>\"'")
    assert tag("td", text).count("<") == 2


def test_page_escapes_title_and_deployment() -> None:
    html = page("<x>", Markup("<p>body</p>"), current="./", deployment="<d>", base="/c/")
    assert "<x>" not in html and "&lt;x&gt;" in html and "&lt;d&gt;" in html
    assert '<base href="/c/">' in html and "<p>body</p>" in html
    assert '<a href="audit">Audit</a>' in html and '<a href="live">Live</a>' in html
    assert '<a href="./" class="current" aria-current="page">Fleet</a>' in html
    assert '<script src="static/console.js"' not in html
    assert '<script src="static/console.js"' in page("t", Markup(""), current="", deployment="d", script=True)


def test_when_shows_utc_to_the_second_in_a_time_element() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    assert when(at) == '<time datetime="2026-01-02T03:04:05.000678+00:00">2026-01-02 03:04:05</time>'
    assert when(None) == "-"


def test_table_escapes_headers_and_cells() -> None:
    out = table(["<h>"], [["<c>", Markup("<b>ok</b>")]], class_="t")
    assert out == (
        '<table class="t"><thead><tr><th>&lt;h&gt;</th></tr></thead>'
        "<tbody><tr><td>&lt;c&gt;</td><td><b>ok</b></td></tr></tbody></table>"
    )
