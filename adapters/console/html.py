"""HTML for the console's pages: escaping, and the layout every page shares.

Everything the log holds is chosen, in part, by whoever drives a sandbox (a conversation id, a reason,
an actor, a path in an event's data), so nothing from it reaches a page unescaped: pages are built from
``esc``-aped text and ``Markup`` the console wrote itself, never by formatting raw values into HTML.
The Content-Security-Policy (``app.SECURITY_HEADERS``) forbids inline scripts as a second line.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote, urlencode


class Markup(str):
    """HTML the console wrote itself: ``esc`` passes it through unchanged."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """``value`` as HTML text (quotes too: the same text goes into attributes)."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[object]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, body: object = "", /, **attrs: object) -> Markup:
    """``<name attrs>body</name>``; attribute values are escaped, ``class_`` is ``class``, a None or
    False value leaves the attribute out."""
    shown = "".join(
        f' {key.rstrip("_").replace("_", "-")}="{esc(value)}"'
        for key, value in attrs.items()
        if value is not None and value is not False
    )
    return Markup(f"<{name}{shown}>{esc(body)}</{name}>")


def link(href: str, body: object, /, **attrs: object) -> Markup:
    return tag("a", body, href=href, **attrs)


def sandbox_href(sandbox_id: str) -> str:
    """The path of a sandbox's page (its id percent-encoded: a path segment, whatever it holds)."""
    return "sandboxes/" + quote(sandbox_id, safe="")


def query(path: str, params: Mapping[str, object]) -> str:
    """``path`` with the non-empty ``params`` as its query string (values percent-encoded)."""
    kept = {k: str(v) for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def when(at: datetime | None) -> Markup:
    """A time as the pages show it (UTC, to the second), in a <time> a reader's script may localise."""
    if at is None:
        return Markup("-")
    return tag("time", at.strftime("%Y-%m-%d %H:%M:%S"), datetime=at.isoformat())


def table(headers: Iterable[str], rows: Iterable[Iterable[object]], **attrs: object) -> Markup:
    head = join(tag("th", h) for h in headers)
    body = join(tag("tr", join(tag("td", cell) for cell in row)) for row in rows)
    return tag("table", Markup(f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"), **attrs)


# Every link is relative to the page's <base>, the console's root: the same pages work served alone
# (at /) and mounted by a backend under a prefix (its root_path).
NAV = (("./", "Fleet"), ("audit", "Audit"), ("live", "Live"))


def page(
    title: str, body: Markup, *, current: str, deployment: str, script: bool = False, base: str = "/"
) -> str:
    """A whole page: the shared head, the navigation and ``body``; ``base`` is the console's root."""
    nav = join(
        link(
            href,
            name,
            class_="current" if href == current else None,
            aria_current="page" if href == current else None,
        )
        for href, name in NAV
    )
    js = tag("script", "", src="static/console.js", defer="defer") if script else ""
    return "<!doctype html>" + tag(
        "html",
        join(
            [
                tag(
                    "head",
                    join(
                        [
                            Markup('<meta charset="utf-8">'),
                            Markup(f'<base href="{esc(base)}">'),
                            Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
                            tag("title", f"{title} - sandbox console"),
                            Markup('<link rel="stylesheet" href="static/console.css">'),
                            js,
                        ]
                    ),
                ),
                tag(
                    "body",
                    join(
                        [
                            tag(
                                "header",
                                join(
                                    [
                                        tag("span", "sandbox console", class_="brand"),
                                        tag("nav", nav),
                                        tag("span", f"deployment {deployment}", class_="deployment"),
                                    ]
                                ),
                            ),
                            tag("main", join([tag("h1", title), body])),
                        ]
                    ),
                ),
            ]
        ),
        lang="en",
    )
