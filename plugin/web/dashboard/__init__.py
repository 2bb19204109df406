"""The ISMS dashboard: server-rendered pages under /dashboard for people who sign in (``gapbridge users``).

A page is a view on ``bp`` in a module of this package, imported at the bottom of this file, guarded by
``signed_in`` and rendering a template that extends ``base.html``::

    from . import bp
    from .signin import RISK_WRITE, signed_in

    @bp.get("/heatmap")
    @signed_in()                  # any signed-in user; admin passes every guard
    def heatmap(): return render_template("heatmap.html", ...)

    @bp.post("/risks/<int:id>/revoke")
    @signed_in(RISK_WRITE)        # isms_manager and admin; an auditor gets the 403 page
    def revoke(id): ...

Every POST of the blueprint must carry the form field ``csrf_token`` (templates: ``{{ csrf_field() }}``), else 400;
every answer under /dashboard gets the security headers of ``security.py``, whose CSP allows no inline script or style.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates", static_folder="static")


def init_dashboard(app: Flask, options: Mapping[str, Any]) -> None:
    """Session cookies, the secret key and the clock from ``dashboard.*`` of the configuration, then the blueprint."""
    security.init_app(app, options)
    figures.install(app.jinja_env)  # the charts and number filters the pages' partials call, as the PDF report's do
    app.register_blueprint(bp)


# each module adds its views and hooks to ``bp`` when imported
from . import figures, pages, reports, risks, security, signin  # noqa: E402,F401
