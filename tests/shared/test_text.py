"""stylequeue.shared.text: the one yes/no rule and the one password mask."""

from __future__ import annotations

import pytest

from stylequeue.shared.text import hide_password, parse_bool, parse_decimal, parse_int

TRUE = ["1", "true", "TRUE", "True", "yes", "Yes", "on", "ON", " on ", "\ttrue\n"]
FALSE = ["0", "false", "FALSE", "no", "No", "off", "Off", " off "]


@pytest.mark.parametrize("raw", TRUE)
def test_true_words(raw: str) -> None:
    assert parse_bool(raw, "field") is True


@pytest.mark.parametrize("raw", FALSE)
def test_false_words(raw: str) -> None:
    assert parse_bool(raw, "field") is False


@pytest.mark.parametrize("value", [True, False])
def test_bools_pass_through(value: bool) -> None:
    assert parse_bool(value, "field") is value


@pytest.mark.parametrize("raw", ["nope", "2", "y", "t", "enable", "-1", "1.0", "truee"])
def test_anything_else_is_an_error_naming_the_field(raw: str) -> None:
    with pytest.raises(ValueError, match=r"^preserve_colors must be one of 1/true/yes/on") as info:
        parse_bool(raw, "preserve_colors")
    assert repr(raw) in str(info.value)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_blank_takes_the_default_or_is_an_error(raw: str | None) -> None:
    assert parse_bool(raw, "f", default=False) is False
    assert parse_bool(raw, "f", default=True) is True
    with pytest.raises(ValueError, match=r"^f must be"):
        parse_bool(raw, "f")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host", "redis://:***@host"),
        ("redis://:s3cret@main-host:6379/0", "redis://:***@main-host:6379/0"),
        ("rediss://default:pw@cache.example.com:6380/2", "rediss://default:***@cache.example.com:6380/2"),
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql+psycopg://user:pw@db:5432/stylequeue?sslmode=require",
         "postgresql+psycopg://user:***@db:5432/stylequeue?sslmode=require"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),  # IPv6 brackets kept
        ("redis://:pw@Main-Host:6379", "redis://:***@Main-Host:6379"),  # host as written
        ("redis://:p@ss:w@rd@host:6379", "redis://:***@host:6379"),  # '@' and ':' inside
    ],
)  # fmt: skip
def test_password_is_masked(url: str, shown: str) -> None:
    assert hide_password(url) == shown
    assert "pw" not in hide_password(url).replace("pwd", "")


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@host:6379",  # a user, no password
        "redis://user:@host",  # an empty password: nothing to hide
        "postgresql://u@h/db",
        "sqlite:///./var/stylequeue.db",
        "sqlite://",
        "file:///tmp/objects",
        "s3://bucket/prefix",
        "not a url at all",
        "",
    ],
)
def test_urls_without_a_password_are_unchanged(url: str) -> None:
    assert hide_password(url) == url


# ---- numbers: ASCII digits only -------------------------------------------------------------


def test_parse_int_takes_ascii_digits_only() -> None:
    assert parse_int("0") == 0 and parse_int("0042") == 42
    # "²" passes str.isdigit() and then fails int(); int() takes other scripts' digits,
    # underscores, signs and spaces: none of them is a number people type here
    for text in ["²", "\u0661\u0660", "1_000", "+3", "-3", " 5", "5 ", "", "0x10", "1e3"]:
        with pytest.raises(ValueError):
            parse_int(text)


def test_parse_decimal_takes_ascii_numbers_only() -> None:
    assert [parse_decimal(t) for t in ["1", "-1.5", ".02", "1e4", "2.", "+3E-2"]] == [
        1.0, -1.5, 0.02, 1e4, 2.0, 0.03,
    ]  # fmt: skip
    for text in ["nan", "inf", "Infinity", "1_0", "\u0661.5", "", ".", "1e", "0x1p3"]:
        with pytest.raises(ValueError):
            parse_decimal(text)
