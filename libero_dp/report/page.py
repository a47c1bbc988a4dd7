"""The report's Jinja2 templates (libero_dp/templates): the page, the Markdown summary and their table /
video macros, so the layout can change without reading Python. Also the table helpers other pages use
(stages/compare.py), rendered through the same macros."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2
from markupsafe import Markup

from libero_dp.report.tables import fmt

TEMPLATES = "templates"  # inside the libero_dp package (shipped as package data)
CSS = files("libero_dp").joinpath(TEMPLATES, "report.css").read_text()


def _escape(value: Any) -> Any:
    """HTML-escape every {{ value }} as html.escape does (macro output, already markup, passes through)."""
    return value if hasattr(value, "__html__") else Markup(html.escape(str(value)))


def _md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("libero_dp", TEMPLATES),
        autoescape=autoescape,
        finalize=_escape if autoescape else None,
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not a blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(f=format, fmt=fmt, md_cell=_md_cell)
    return env


@cache
def html_env() -> jinja2.Environment:
    return _env(autoescape=True)


@cache
def md_env() -> jinja2.Environment:
    return _env(autoescape=False)


def render_html(template: str, context: dict[str, Any]) -> str:
    return html_env().get_template(template).render(context)


def render_md(template: str, context: dict[str, Any]) -> str:
    return md_env().get_template(template).render(context)


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table, cells escaped (the page's table macro)."""
    return str(html_env().get_template("macros.html.j2").module.table(headers, list(rows), cls))


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table, '|' in cells escaped (the summary's table macro)."""
    return str(md_env().get_template("macros.md.j2").module.table(list(headers), list(rows)))


def video_figure(video: dict[str, Any]) -> str:
    """A <figure> with the video player and its caption (the page's video macro)."""
    return str(html_env().get_template("macros.html.j2").module.video(video))
