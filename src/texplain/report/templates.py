"""The package's HTML templates, rendered with autoescaping on: every name and word a page shows is escaped."""

from __future__ import annotations


def render_template(name: str, **context: object) -> str:
    """Render ``report/templates/<name>`` with ``context``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("texplain", "report/templates"), autoescape=select_autoescape(["html"]))
    return env.get_template(name).render(**context)
