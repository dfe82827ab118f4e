"""``shared/params.py``: the parameter table, what is valid, and what a server allows.

Validity (a type and its domain) is checked everywhere; a deployment's Limits only where the
service takes a job. These need no TensorFlow.
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from stylequeue.shared.params import (
    JOB_PARAMETERS,
    MAX_SEED,
    MAX_STYLES,
    MAX_URL_CHARS,
    PARAMETERS,
    PRESETS,
    PUBLIC_PARAMETERS,
    TRANSFER_PARAMETERS,
    WEBHOOK_EVENTS,
    JobOptions,
    ParamError,
    TransferParams,
)
from stylequeue.shared.settings import Limits

SERVER = Limits(max_size=128, max_iterations=200, max_styles=3)

# ---- every parameter rule gives its error, naming the field -------------------------------

INVALID: list[tuple[dict, str]] = [
    ({"preset": "nope"}, "preset"),
    ({"colour": "red"}, "colour"),
    ({"iterations": "0"}, "iterations"),
    ({"iterations": -5}, "iterations"),
    ({"iterations": "ten"}, "iterations"),
    ({"iterations": 2.5}, "iterations"),
    ({"iterations": True}, "iterations"),
    ({"iterations": 10**8}, "iterations"),
    ({"max_size": 8}, "max_size"),
    ({"max_size": 100_000}, "max_size"),
    ({"content_weight": -1}, "content_weight"),
    ({"content_weight": "nan"}, "content_weight"),
    ({"style_weight": "inf"}, "style_weight"),
    ({"style_weight": 0, "content_weight": 0}, "style_weight"),
    ({"tv_weight": -0.5}, "tv_weight"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"learning_rate": 1000}, "learning_rate"),
    ({"beta_1": 1.0}, "beta_1"),
    ({"beta_2": -0.1}, "beta_2"),
    ({"epsilon": 0}, "epsilon"),
    ({"content_layers": "block9_conv1"}, "content_layers"),
    ({"content_layers": []}, "content_layers"),
    ({"style_layers": "block1_conv1,block1_conv1"}, "style_layers"),
    ({"style_layers": "block1_conv1:-1"}, "style_layers"),
    ({"style_layers": "block1_conv1:0"}, "style_layers"),
    ({"style_layers": "block1_conv1:x"}, "style_layers"),
    ({"style_blend": "1,2"}, "style_blend"),  # two weights, one style
    ({"style_blend": "0"}, "style_blend"),
    ({"style_blend": "-1"}, "style_blend"),
    ({"style_scale": 0.05}, "style_scale"),
    ({"style_scale": 5}, "style_scale"),
    ({"preserve_colors": "maybe"}, "preserve_colors"),
    ({"init": "zeros"}, "init"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**31}, "seed"),
    ({"snapshot_every": -1}, "snapshot_every"),
    ({"precision": "float16"}, "precision"),
    ({"weights": "/models/vgg19.h5"}, "weights"),  # paths only where allowed
    # Python's int() and float() read these; no client's number looks like them (the
    # OpenAPI document says integer / number): plain ASCII decimals only
    ({"iterations": "1_000"}, "iterations"),
    ({"iterations": "\u0661\u0660"}, "iterations"),  # Arabic-Indic 10
    ({"content_weight": "1_0"}, "content_weight"),
    ({"style_scale": "\uff11"}, "style_scale"),  # a full-width 1
    ({"style_blend": "1_0"}, "style_blend"),
    ({"optimizer": "sgd"}, "optimizer"),
    ({"optimizer": "LBFGS"}, "optimizer"),
    ({"lbfgs_history": 0}, "lbfgs_history"),
    ({"lbfgs_history": 101}, "lbfgs_history"),
    ({"scales": 0}, "scales"),
    ({"scales": 5}, "scales"),
    ({"scales": "two"}, "scales"),
    ({"scales": 3, "iterations": 2}, "scales"),  # each scale needs an iteration
]


@pytest.mark.parametrize(("data", "field"), INVALID, ids=[f for _, f in INVALID])
def test_each_invalid_parameter_names_its_field(data: dict, field: str) -> None:
    for limits in (None, SERVER):
        with pytest.raises(ParamError) as info:
            TransferParams.from_inputs(data, limits=limits)
        assert info.value.field == field
        assert info.value.message and "\n" not in str(info.value)


def test_weight_paths_must_be_keras_files_and_style_count_is_bounded() -> None:
    with pytest.raises(ParamError) as info:
        TransferParams.from_inputs({"weights": "vgg.txt"}, allow_weight_paths=True)
    assert info.value.field == "weights"
    TransferParams.from_inputs({"weights": "vgg.h5"}, allow_weight_paths=True)  # fine
    for n_styles in (0, MAX_STYLES + 1):
        with pytest.raises(ParamError) as info:
            TransferParams.from_inputs({}, n_styles=n_styles)
        assert info.value.field == "style"


def test_optimizer_and_scales_are_job_parameters() -> None:
    p = TransferParams.from_inputs({"optimizer": "lbfgs", "scales": "3", "iterations": "3"})
    assert (p.optimizer, p.scales, p.lbfgs_history) == ("lbfgs", 3, 10)
    default = TransferParams.from_inputs({})
    assert (default.optimizer, default.scales) == ("adam", 1)
    assert TransferParams.from_dict(p.to_dict()) == p


def test_valid_inputs_pass_and_presets_apply() -> None:
    p = TransferParams.from_inputs(
        {"preset": "seed", "iterations": "12", "preserve_colors": "yes", "style_blend": "1,3"},
        n_styles=2,
    )
    assert p.iterations == 12 and p.preserve_colors and p.learning_rate == pytest.approx(7 / 255)
    assert p.blend(2) == (0.25, 0.75)


# ---- valid vs allowed here ----------------------------------------------------------------


def test_without_limits_no_service_cap_applies() -> None:
    """The CLI passes no limits: a big picture, a long run, many styles are the user's call
    on their own machine (they were held to the service's default caps before)."""
    defaults = Limits()
    p = TransferParams.from_inputs(
        {"max_size": defaults.max_size * 4, "iterations": defaults.max_iterations * 5},
        n_styles=defaults.max_styles + 1,
    )
    assert p.max_size == defaults.max_size * 4
    assert p.validate(n_styles=defaults.max_styles + 1) is p


@pytest.mark.parametrize(
    ("over", "at_the_cap", "field", "message"),
    [
        (({"iterations": 201}, 1), ({"iterations": 200}, 1), "iterations",
         "must be from 1 to 200 on this server, got 201"),
        (({"max_size": 129}, 1), ({"max_size": 128}, 1), "max_size",
         "must be from 16 to 128 on this server, got 129"),
        (({"snapshot_every": 201}, 1), ({"snapshot_every": 200}, 1), "snapshot_every",
         "must be from 0 to 200 on this server, got 201"),
        (({}, 4), ({}, 3), "style", "give 1 to 3 style images on this server, got 4"),
    ],
)  # fmt: skip
def test_a_servers_limits_apply_where_given(
    over: tuple[dict, int], at_the_cap: tuple[dict, int], field: str, message: str
) -> None:
    base = {"iterations": 5, "max_size": 64}
    (data, n_styles), (allowed, n_allowed) = over, at_the_cap
    TransferParams.from_inputs({**base, **data}, n_styles=n_styles)  # valid
    with pytest.raises(ParamError) as info:
        TransferParams.from_inputs({**base, **data}, n_styles=n_styles, limits=SERVER)
    assert (info.value.field, info.value.message) == (field, message)
    TransferParams.from_inputs({**base, **allowed}, n_styles=n_allowed, limits=SERVER)


def test_limits_only_lower_the_intrinsic_bounds() -> None:
    huge = Limits(max_size=10**9, max_iterations=10**9, max_styles=10**6)
    assert PARAMETERS["max_size"].high_within(huge) == PARAMETERS["max_size"].high
    with pytest.raises(ParamError) as info:
        TransferParams.from_inputs({"max_size": 10**8}, limits=huge)
    assert info.value.field == "max_size"


# ---- the table ----------------------------------------------------------------------------


def test_the_table_has_one_row_per_field_and_the_fields_defaults() -> None:
    assert list(TRANSFER_PARAMETERS) == [f.name for f in fields(TransferParams)]
    assert list(JOB_PARAMETERS) == [f.name for f in fields(JobOptions)]
    assert list(PARAMETERS) == list(TRANSFER_PARAMETERS) + list(JOB_PARAMETERS)
    defaults = {**vars(TransferParams()), **vars(JobOptions())}
    for name, param in PARAMETERS.items():
        assert param.name == name
        assert defaults[name] == param.default, name
        assert param.label, name
        assert param.limit is None or hasattr(Limits(), param.limit), name
        assert len(param.choice_labels) in (0, len(param.choices)), name
        if param.kind in ("int", "float"):
            assert param.low is not None and param.high is not None and param.low < param.high


def test_the_table_defaults_and_every_preset_are_valid() -> None:
    TransferParams().validate()
    for name, preset in PRESETS.items():
        assert preset.preset == name
        preset.validate()


@pytest.mark.parametrize("name", [n for n, p in PARAMETERS.items() if p.kind in ("int", "float")])
def test_each_numeric_bound_is_the_validated_one(name: str) -> None:
    param = PARAMETERS[name]
    base = {"content_weight": 1.0, "style_weight": 1.0}  # either may be 0 alone
    for value in (param.low, param.high):
        TransferParams.from_inputs({**base, name: value})
    if param.kind == "int":
        below, above = param.low - 1, param.high + 1
    else:
        below, above = param.low - max(param.low, 1e-9) / 2, param.high * 1.001
    for value in (below, above):
        with pytest.raises(ParamError) as info:
            TransferParams.from_inputs({**base, name: value})
        assert info.value.field == name


def test_public_parameters_are_the_preset_and_the_documented_knobs() -> None:
    assert PUBLIC_PARAMETERS[0] == "preset"
    assert set(PUBLIC_PARAMETERS) == {
        "preset", "iterations", "max_size", "content_weight", "style_weight", "tv_weight",
        "learning_rate", "seed", "snapshot_every", "preserve_colors", "weights",
        "style_scale", "style_blend", "init", "optimizer", "scales", "webhook", "webhook_events",
    }  # fmt: skip
    assert PARAMETERS["seed"].high == MAX_SEED


def test_hints_show_the_range_in_force() -> None:
    assert PARAMETERS["iterations"].hint_for(SERVER).endswith("1 to 200.")
    assert PARAMETERS["max_size"].hint_for(None).startswith("16 to 32768.")
    assert PARAMETERS["style_scale"].hint_for(SERVER) == "Size of the brush strokes, 0.1 to 4."


# ---- the job options: a webhook and its events --------------------------------------------


def test_job_options_default_to_no_webhook_and_every_event() -> None:
    assert JobOptions.from_inputs({}) == JobOptions(None, WEBHOOK_EVENTS)
    assert JobOptions.from_inputs({"webhook": "", "webhook_events": ""}).webhook is None
    assert JobOptions().to_columns() == {"webhook_url": None, "webhook_events": None}


def test_job_options_take_a_url_and_some_events() -> None:
    options = JobOptions.from_inputs(
        {"webhook": " https://hooks.example.org/in?x=1 ", "webhook_events": "completed, started"}
    )
    assert options.webhook == "https://hooks.example.org/in?x=1"
    assert options.webhook_events == ("completed", "started")
    assert options.to_columns() == {
        "webhook_url": "https://hooks.example.org/in?x=1",
        "webhook_events": ["completed", "started"],
    }
    as_json = JobOptions.from_inputs(
        {"webhook": "http://[2001:db8::1]:8080/", "webhook_events": ["progress"]}
    )
    assert as_json.webhook_events == ("progress",)


BAD_OPTIONS: list[tuple[dict, str, str]] = [
    ({"webhook": "ftp://example.org/"}, "webhook", "https or http URL"),
    ({"webhook": "example.org/hook"}, "webhook", "https or http URL"),
    ({"webhook": "https:///path"}, "webhook", "host"),
    ({"webhook": "https://user:pw@example.org/"}, "webhook", "user name or password"),
    ({"webhook": "https://example.org/#x"}, "webhook", "fragment"),
    ({"webhook": "https://example.org:99999/"}, "webhook", "not a valid URL"),
    ({"webhook": "https://example.org:0/"}, "webhook", "port 0"),
    ({"webhook": "https://exa mple.org/"}, "webhook", "spaces"),
    ({"webhook": "https://example.org/" + "a" * MAX_URL_CHARS}, "webhook", "at most 2048"),
    ({"webhook": "https://example.org/", "webhook_events": "done"}, "webhook_events", "'done'"),
    ({"webhook": "https://example.org/", "webhook_events": ","}, "webhook_events", "one or more"),
    ({"webhook": "https://e.org/", "webhook_events": "started,started"}, "webhook_events", "twice"),
    ({"webhook_events": "completed"}, "webhook_events", "give a webhook URL"),
    ({"webhok": "https://example.org/"}, "webhok", "unknown job option"),
]


@pytest.mark.parametrize(("data", "field", "says"), BAD_OPTIONS)
def test_bad_job_options_name_their_field(data: dict, field: str, says: str) -> None:
    with pytest.raises(ParamError) as info:
        JobOptions.from_inputs(data)
    assert info.value.field == field
    assert says in info.value.message


def test_transfer_params_do_not_take_job_options() -> None:
    """The engine's part of the table stays the transfer's: a webhook is not a picture's."""
    with pytest.raises(ParamError) as info:
        TransferParams.from_inputs({"webhook": "https://example.org/"})
    assert info.value.field == "webhook"
    assert "webhook" not in TransferParams().to_dict()


def test_min_side_is_what_the_deepest_layer_needs() -> None:
    from stylequeue.shared.params import job_min_side, min_side

    assert min_side(("block1_conv1",)) == 1 and min_side(("block3_conv4", "block1_conv1")) == 4
    assert job_min_side(TransferParams()) == 16  # block5 layers: four halvings before them
    shallow = replace(
        TransferParams(),
        content_layers=(("block2_conv2", 1.0), ("block5_conv2", 0.0)),  # weight 0: unused
        style_layers=(("block1_conv1", 1.0), ("block3_conv1", 1.0)),
    )
    assert job_min_side(shallow) == 4
