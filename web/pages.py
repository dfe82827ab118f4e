"""The HTML pages: submission form, jobs list, the live job dashboard, the operators' fleet.

Thin on purpose: the pages render a shell (layout, form controls, the job's first state) and
small hand-written ES modules in ``web/static`` do the rest through the JSON API, with the
session cookie and its CSRF token. Static files are served by this blueprint under
``/assets/`` with a content hash in the URL (``static_assets``), so browsers cache them for
a year and never run a stale script after an upgrade. What the form offers is
``form_spec`` (made from the parameter table); its time estimates are ``time_estimate``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as Redirect

from stylequeue.shared.images import ALLOWED_FORMATS
from stylequeue.shared.params import PRESETS
from stylequeue.shared.settings import Limits
from stylequeue.web import auth
from stylequeue.web.admission import fleet_capacity
from stylequeue.web.base import JobNotFound, get_job_or_404, page_params
from stylequeue.web.config_info import limits_payload
from stylequeue.web.extensions import services
from stylequeue.web.form_spec import (
    DEFAULT_PRESET,
    FORM_PRESETS,
    SAMPLES,
    form_fields,
    preset_values,
)
from stylequeue.web.job_json import job_json
from stylequeue.web.static_assets import ONE_YEAR, asset, import_map_json
from stylequeue.web.time_estimate import preset_estimate


class _Pages(Blueprint):
    def get_send_file_max_age(self, filename: str | None) -> int | None:
        # Hashed URLs (?v=...) never change content: cache them hard. Anything else revalidates.
        return ONE_YEAR if request.args.get("v") else None


bp = _Pages(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)


def _page_config(limits: Limits) -> dict[str, Any]:
    return {
        "limits": limits_payload(limits),
        "formats": sorted(ALLOWED_FORMATS.values()),
        "presets": {name: preset_values(name, limits) for name, _ in FORM_PRESETS},
        "urls": {"jobs": url_for("api.create_job"), "fleet": url_for("api.get_fleet")},
    }


# ---- views --------------------------------------------------------------------------------

Page = tuple[str, int, dict[str, str]]  # HTML, status, headers


def _render(template: str, status: int = 200, **context: Any) -> Page:
    html = render_template(
        template,
        asset=asset,
        import_map_json=import_map_json(),
        csrf_value=auth.csrf_token(),
        **context,
    )
    return html, status, {"Cache-Control": "no-store"}


@bp.get("/")
def index() -> Page:
    limits = services().settings.limits
    main_fields, advanced_fields = form_fields(limits, preset_values(DEFAULT_PRESET, limits))
    presets = []
    for name, label in FORM_PRESETS:
        values = preset_values(name, limits)
        capped = (values["iterations"], values["max_size"]) != (
            PRESETS[name].iterations,
            PRESETS[name].max_size,
        )
        presets.append({
            "name": name,
            "label": label,
            "iterations": values["iterations"],
            "max_size": values["max_size"],
            "estimate": preset_estimate(values["iterations"], values["max_size"]),
            "capped": capped,
        })  # fmt: skip
    return _render(
        "pages/index.html",
        nav="new",
        anonymous=services().settings.anonymous,
        samples=SAMPLES,
        presets=presets,
        default_preset=DEFAULT_PRESET,
        main_fields=main_fields,
        advanced_fields=advanced_fields,
        accept=",".join(sorted(ALLOWED_FORMATS.values())),
        max_upload_mb=f"{limits.max_upload_bytes / 1024 / 1024:g}",
        fleet=fleet_capacity(services(), limits),
        page_config=_page_config(limits),
    )


@bp.get("/jobs")
def jobs() -> Page:
    params = page_params(lenient=True)
    config = {
        "page": params.page,
        "per_page": params.per_page,
        "urls": {"jobs": url_for("api.list_jobs")},
    }
    return _render("pages/jobs.html", nav="jobs", page_config=config)


@bp.get("/jobs/<job_id>")
def dashboard(job_id: str) -> Page:
    data = job_json(get_job_or_404(job_id))
    days = services().settings.retention_days
    config = {
        "job": data,
        "retention_days": days,
        "urls": {"fleet": url_for("api.get_fleet"), "jobs": url_for("pages.jobs")},
    }
    return _render(
        "pages/dashboard.html", nav="jobs", job=data, retention_days=days, page_config=config
    )


@bp.get("/fleet")
def fleet() -> Page:
    """Operators only: the fleet (its script polls ``/api/v1/admin/fleet`` with the session
    cookie). Without a sign-in: the sign-in form and nothing of the fleet, as a 401."""
    admin = auth.session_admin()
    if admin is None:
        return _sign_in_page()
    config = {"urls": {"fleet": url_for("api.admin_fleet"), "sign_in": url_for("pages.fleet")}}
    name = admin.partition(":")[2] or admin
    return _render("pages/fleet.html", nav="fleet", admin=name, page_config=config)


def _sign_in_page(refused: bool = False) -> Page:
    html, _, headers = _render("pages/fleet_sign_in.html", nav="fleet", refused=refused)
    return html, 401, {**headers, "WWW-Authenticate": 'Bearer realm="stylequeue operators"'}


@bp.post("/fleet/sign-in")
def fleet_sign_in() -> Page | Redirect:
    """The sign-in form (CSRF-checked by ``auth.protect``): a right token signs the session
    in (``auth.admin_sign_in``) and goes back to the fleet; a wrong one shows the form again."""
    if auth.admin_sign_in(request.form.get("token", "")) is None:
        return _sign_in_page(refused=True)
    return redirect(url_for("pages.fleet"), code=303)


@bp.post("/fleet/sign-out")
def fleet_sign_out() -> Redirect:
    auth.admin_sign_out()
    return redirect(url_for("pages.fleet"), code=303)


@bp.errorhandler(JobNotFound)
def job_not_found(exc: JobNotFound) -> Page:
    """The pages' own 404 for a job that is not the caller's (the API answers JSON)."""
    return not_found(what="job")


def not_found(what: str = "page") -> Page:
    return _render("pages/404.html", status=404, nav=None, what=what)


@bp.app_errorhandler(404)
def page_not_found(exc: HTTPException) -> Page | Response | HTTPException:
    """HTML 404 for browsers on other paths; the API keeps its JSON errors."""
    from stylequeue.web.errors import handle_http_exception, wants_json

    if wants_json():
        return handle_http_exception(exc)
    return not_found()
