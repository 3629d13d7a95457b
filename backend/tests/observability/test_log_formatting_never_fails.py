"""The log formatters turn any record into one line: non-str messages, bad %-format arguments,
objects whose __str__ and __repr__ raise, bytes, NUL, lone surrogates, huge values and
extras that are not JSON-serialisable never make formatting fail."""

import json
import logging
from typing import Any

import pytest

from app.observability.logging import MAX_VALUE_CHARS, JsonFormatter, TextFormatter


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


HUGE_INT = 10**5000  # str() refuses it (Python's int digit limit)

CASES: dict[str, tuple[Any, tuple[Any, ...], dict[str, Any]]] = {
    "non-str message": (12345, (), {}),
    "message object that cannot be printed": (Unprintable(), (), {}),
    "too few format arguments": ("%s and %s", ("one",), {}),
    "wrong format argument type": ("%d items", ("many",), {}),
    "argument that cannot be printed": ("%s", (Unprintable(),), {}),
    "huge integer argument": ("%d", (HUGE_INT,), {}),
    "bytes and NUL": ("nul\x00here %s", (b"\x00\xff",), {"raw": b"\x00\xfe"}),
    "lone surrogate": ("bad \ud800 text", (), {"field": "\udfff"}),
    "huge string extra": ("x", (), {"blob": "a" * (MAX_VALUE_CHARS * 5)}),
    "integer extras past 64 bits": ("x", (), {"big": 2**70, "huge": HUGE_INT}),
    "unserialisable extras": ("x", (), {"obj": object(), "bad": Unprintable(), "s": {1, 2}}),
    "extra with non-str keys": ("x", (), {"mapping": {1: "a", (2, 3): "b"}}),
}


def _record(msg: Any, args: tuple[Any, ...], extras: dict[str, Any]) -> logging.LogRecord:
    record = logging.LogRecord("app.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extras)
    return record


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_formatter_writes_one_json_object(name: str) -> None:
    line = JsonFormatter().format(_record(*CASES[name]))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "app.test"
    assert isinstance(entry["message"], str)
    line.encode("utf-8")  # writable to any UTF-8 stream
    assert len(line) < 10 * MAX_VALUE_CHARS


@pytest.mark.parametrize("name", sorted(CASES))
def test_text_formatter_writes_one_line(name: str) -> None:
    line = TextFormatter().format(_record(*CASES[name]))
    assert "INFO" in line and "app.test:" in line
    assert "\x00" not in line
    line.encode("utf-8")
    assert len(line) < 10 * MAX_VALUE_CHARS


def test_bad_arguments_keep_the_template_and_the_arguments() -> None:
    entry = json.loads(JsonFormatter().format(_record("%s and %s", ("one",), {})))
    assert "%s and %s" in entry["message"] and "one" in entry["message"]


def test_ordinary_records_are_unchanged() -> None:
    entry = json.loads(JsonFormatter().format(_record("%s took %d ms", ("parse", 12), {"n": 1})))
    assert entry["message"] == "parse took 12 ms" and entry["n"] == 1 and entry["pid"]
    line = TextFormatter().format(_record("%s took %d ms", ("parse", 12), {"n": 1}))
    assert line.endswith("INFO    app.test: parse took 12 ms n=1")


def test_a_logger_call_with_broken_values_reaches_the_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through logging itself: nothing is lost to logging's own "--- Logging error ---"."""
    logger = logging.getLogger("app.test.robust")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("%d", "x", extra={"bad": Unprintable(), "big": HUGE_INT})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    err = capsys.readouterr().err
    assert "Logging error" not in err
    assert json.loads(err)["level"] == "WARNING"
