"""A placeholder Overview at /dashboard/, until the real one (issue 12's pages) takes its place: replace this module."""

from __future__ import annotations

from typing import Any

from flask import render_template_string

from . import bp
from .signin import signed_in

_OVERVIEW = """{% extends "base.html" %}
{% block title %}Overview{% endblock %}
{% block content %}
<h1>Overview</h1>
<p class="muted">Signed in as {{ dashboard_user.username }} ({{ dashboard_user.role_label }}). The overview of gaps and
coverage comes here; the pages above are listed in the navigation.</p>
{% endblock %}"""


@bp.get("/")
@signed_in()
def index() -> Any:
    return render_template_string(_OVERVIEW)
