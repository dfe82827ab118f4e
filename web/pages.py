"""The HTML pages: submission form, jobs list and the live job dashboard.

Thin on purpose: the pages render a shell (layout, form controls, the job's first state) and
small hand-written ES modules in ``web/static`` do the rest through the JSON API, with the
session cookie and its CSRF token. Static files are served by this blueprint under
``/assets/`` with a content hash in the URL, so browsers cache them for a year and never
run a stale script after an upgrade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from flask import Blueprint, render_template, request, url_for

from stylequeue.shared.images import ALLOWED_FORMATS
from stylequeue.shared.params import MAX_SEED, PRESETS
from stylequeue.shared.settings import Limits
from stylequeue.web import auth
from stylequeue.web.base import JobNotFound, get_job_or_404, page_params
from stylequeue.web.config_info import limits_payload
from stylequeue.web.extensions import services
from stylequeue.web.job_json import job_json

STATIC_DIR = Path(__file__).parent / "static"
ONE_YEAR = 365 * 24 * 3600


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


@lru_cache(maxsize=256)
def _file_hash(path: str, mtime: float) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:10]


def asset(filename: str) -> str:
    """URL of a static file with its content hash (cache busting)."""
    path = STATIC_DIR / filename
    try:
        version: str | None = _file_hash(str(path), path.stat().st_mtime)
    except OSError:
        version = None
    return url_for("pages.static", filename=filename, v=version)


# Modules that other modules import: an import map sends "./common.js" to its hashed URL,
# so repeat visits cost no request at all (not even a 304).
SHARED_MODULES = ("js/common.js", "js/chart.js")


def import_map() -> dict[str, dict[str, str]]:
    return {"imports": {url_for("pages.static", filename=m): asset(m) for m in SHARED_MODULES}}


# ---- what the form offers -----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    slug: str
    title: str
    artist: str
    year: int


SAMPLES = (
    Sample("starry-night", "The Starry Night", "Vincent van Gogh", 1889),
    Sample("the-scream", "The Scream", "Edvard Munch", 1893),
    Sample("woman-with-hat", "Woman with a Hat", "Henri Matisse", 1905),
    Sample("shipwreck", "The Shipwreck", "J. M. W. Turner", 1805),
)

FORM_PRESETS = (("quick", "Quick"), ("balanced", "Balanced"), ("high", "High quality"))
DEFAULT_PRESET = "quick"

# Rough time per iteration on the reference machine of the form's estimates: the 2-core
# build VM (tensorflow-cpu 2.21, precision auto = mixed_bfloat16 there, one fused VGG19 +
# Adam step), measured idle with worker.engine.transfer on a 3:2 image: 0.205 s at 256 px,
# 0.435 s at 384 px, 0.759 s at 512 px. Cost is about a fixed part plus a part per pixel; a
# GPU is far faster (no figure measured here yet).
ESTIMATE_MACHINE = "a 2-core CPU"
ESTIMATE_FIXED_S = 0.02
ESTIMATE_PER_PIXEL_S = 4.2e-6


def seconds_per_iteration(max_size: int) -> float:
    pixels = max_size * max_size * 2 / 3  # a 3:2 photo
    return ESTIMATE_FIXED_S + ESTIMATE_PER_PIXEL_S * pixels


def _human(seconds: float) -> str:
    if seconds < 50:
        return f"{max(5, round(seconds / 5) * 5)} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{max(1, round(minutes))} min"
    return f"{minutes / 60:.1f} h"


def preset_estimate(iterations: int, max_size: int) -> str:
    return f"≈ {_human(iterations * seconds_per_iteration(max_size))} on {ESTIMATE_MACHINE}"


def _num(value: float) -> str:
    return f"{value:g}"


def _fields(limits: Limits, preset: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    main = [
        {"name": "iterations", "label": "Iterations", "min": 1, "max": limits.max_iterations,
         "step": 1, "value": preset["iterations"],
         "hint": f"More steps, more painterly. 1 to {limits.max_iterations}."},
        {"name": "max_size", "label": "Size (longest side, px)", "min": 16,
         "max": limits.max_size, "step": 1, "value": preset["max_size"],
         "hint": f"16 to {limits.max_size}. Bigger is slower."},
    ]  # fmt: skip
    advanced = [
        {"name": "style_weight", "label": "Style weight", "min": 0, "max": 1e12, "step": "any",
         "value": _num(preset["style_weight"]), "hint": "Higher: more painting, less photo."},
        {"name": "content_weight", "label": "Content weight", "min": 0, "max": 1e12,
         "step": "any", "value": _num(preset["content_weight"]),
         "hint": "Higher: the photo stays more recognisable."},
        {"name": "tv_weight", "label": "Smoothness", "min": 0, "max": 1e12,
         "step": "any", "value": _num(preset["tv_weight"]),
         "hint": "Total-variation weight. Higher: fewer speckles."},
        {"name": "learning_rate", "label": "Learning rate", "min": 0.000001, "max": 100,
         "step": "any", "value": _num(preset["learning_rate"]),
         "hint": "Optimiser step size (pixels in 0-1)."},
        {"name": "style_scale", "label": "Style scale", "min": 0.1, "max": 4, "step": "any",
         "value": _num(preset["style_scale"]), "hint": "Size of the brush strokes, 0.1 to 4."},
        {"name": "snapshot_every", "label": "Snapshot every", "min": 0,
         "max": limits.max_iterations, "step": 1, "value": preset["snapshot_every"],
         "hint": "Iterations between saved frames (0: none)."},
        {"name": "seed", "label": "Seed", "min": 0, "max": MAX_SEED, "step": 1,
         "value": preset["seed"], "hint": "Same seed and inputs: same picture."},
    ]  # fmt: skip
    return main, advanced


PRESET_KEYS = (
    "iterations", "max_size", "content_weight", "style_weight", "tv_weight", "learning_rate",
    "style_scale", "snapshot_every", "seed", "preserve_colors",
)  # fmt: skip


def preset_values(name: str, limits: Limits) -> dict[str, Any]:
    """A form preset's values, capped to this server's limits (a small test server, say)."""
    values = {k: getattr(PRESETS[name], k) for k in PRESET_KEYS}
    values["iterations"] = min(values["iterations"], limits.max_iterations)
    values["max_size"] = min(values["max_size"], limits.max_size)
    values["snapshot_every"] = min(values["snapshot_every"], values["iterations"])
    return values


def _page_config(limits: Limits) -> dict[str, Any]:
    return {
        "limits": limits_payload(limits),
        "formats": sorted(ALLOWED_FORMATS.values()),
        "presets": {name: preset_values(name, limits) for name, _ in FORM_PRESETS},
        "urls": {"jobs": url_for("api.create_job"), "fleet": url_for("api.get_fleet")},
    }


# ---- views --------------------------------------------------------------------------------


def _render(template: str, status: int = 200, **context: Any):  # type: ignore[no-untyped-def]
    html = render_template(
        template,
        asset=asset,
        import_map=import_map(),
        csrf_value=auth.csrf_token(),
        **context,
    )
    return html, status, {"Cache-Control": "no-store"}


@bp.get("/")
def index():  # type: ignore[no-untyped-def]
    limits = services().settings.limits
    main_fields, advanced_fields = _fields(limits, preset_values(DEFAULT_PRESET, limits))
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
        samples=SAMPLES,
        presets=presets,
        default_preset=DEFAULT_PRESET,
        main_fields=main_fields,
        advanced_fields=advanced_fields,
        accept=",".join(sorted(ALLOWED_FORMATS.values())),
        max_upload_mb=f"{limits.max_upload_bytes / 1024 / 1024:g}",
        page_config=_page_config(limits),
    )


@bp.get("/jobs")
def jobs():  # type: ignore[no-untyped-def]
    params = page_params(lenient=True)
    config = {
        "page": params.page,
        "per_page": params.per_page,
        "urls": {"jobs": url_for("api.list_jobs")},
    }
    return _render("pages/jobs.html", nav="jobs", page_config=config)


@bp.get("/jobs/<job_id>")
def dashboard(job_id: str):  # type: ignore[no-untyped-def]
    data = job_json(get_job_or_404(job_id))
    config = {"job": data, "urls": {"fleet": url_for("api.get_fleet")}}
    return _render("pages/dashboard.html", nav="jobs", job=data, page_config=config)


@bp.errorhandler(JobNotFound)
def job_not_found(exc: JobNotFound):  # type: ignore[no-untyped-def]
    """The pages' own 404 for a job that is not the caller's (the API answers JSON)."""
    return not_found(what="job")


def not_found(what: str = "page"):  # type: ignore[no-untyped-def]
    return _render("pages/404.html", status=404, nav=None, what=what)


@bp.app_errorhandler(404)
def page_not_found(exc: Exception):  # type: ignore[no-untyped-def]
    """HTML 404 for browsers on other paths; the API keeps its JSON errors."""
    from stylequeue.web.errors import handle_http_exception, wants_json

    if wants_json():
        return handle_http_exception(exc)  # type: ignore[arg-type]
    return not_found()
