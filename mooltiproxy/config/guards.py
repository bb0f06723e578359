"""`guards:` entries, each read into a ready Guard: its rules compiled by RE2 (a pattern RE2
refuses is an error naming the guard), its PII detectors made, its classifier's key read."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import voluptuous as vol

from mooltiproxy.config.checks import CheckContext, Validator, number, one_of
from mooltiproxy.guardrails.guard import BLOCK, LOG, REDACT, Classifier, Guard
from mooltiproxy.guardrails.pii import DETECTORS
from mooltiproxy.guardrails.rules import (
    DEFAULT_WINDOW,
    FLAGS,
    PatternError,
    Rule,
    compile_pattern,
    longest_match,
    within,
)

DEFAULT_MESSAGE = "This request was blocked by the proxy's content policy."
DEFAULT_MASK = "[REDACTED:{rule}]"

_COMMON: dict[str, tuple[Any, Validator]] = {
    "when": ("both", one_of("request", "answer", "both")),
    "action": (BLOCK, one_of(BLOCK, REDACT, LOG)),
    "block_as": ("error", one_of("error", "answer")),
    "message": (DEFAULT_MESSAGE, str),
    "mask": (DEFAULT_MASK, str),
}


def _common(**narrowed: tuple[Any, Validator]) -> dict[Any, Validator]:
    """What every guard type takes (type, when, action, ...), some of it narrowed for one type."""
    keys: dict[Any, Validator] = {vol.Required("type"): str}
    for key, (default, check) in {**_COMMON, **narrowed}.items():
        keys[vol.Optional(key, default=default)] = check
    return keys


_PATTERN = vol.Any(str, {vol.Required("pattern"): str, vol.Optional("name"): str})


def guard_entry(context: CheckContext) -> Validator:
    """The validator of one `guards:` entry, which gives the entry as a ready Guard."""
    schemas = {
        "regex": vol.Schema(
            {
                **_common(),
                vol.Required("patterns"): vol.All([_PATTERN], vol.Length(min=1)),
                vol.Optional("flags", default=[]): [vol.In(list(FLAGS), msg=f"expected one of {', '.join(FLAGS)}")],
                # What a stream holds back for a pattern whose longest match is unbounded (\w+).
                vol.Optional("stream_window", default=DEFAULT_WINDOW): vol.All(int, vol.Range(min=1, max=65536)),
            }
        ),
        "pii": vol.Schema(
            {
                **_common(),
                vol.Optional("detect", default=list(DETECTORS)): vol.All(
                    [vol.In(list(DETECTORS), msg=f"expected one of {', '.join(DETECTORS)}")], vol.Length(min=1)
                ),
            }
        ),
        "classifier": vol.Schema(
            {
                # A classifier reads what the user controls, and finds no span to redact.
                **_common(when=("request", one_of("request")), action=(BLOCK, one_of(BLOCK, LOG))),
                vol.Required("url"): vol.All(str, vol.Match(r"^https?://", msg="expected an http:// or https:// URL")),
                vol.Optional("envkey"): str,
                vol.Optional("label", default="INJECTION"): str,
                vol.Optional("threshold", default=0.999): number(0, 1, exclusive=False),
                vol.Optional("timeout", default=2.0): number(0),
                vol.Optional("on_error", default="closed"): one_of("open", "closed"),
            }
        ),
    }

    def validate(value: Any) -> Guard:
        if not isinstance(value, dict):
            raise vol.Invalid("expected a guard: type, when, action, and what it looks for")
        kind = value.get("type")
        if kind not in schemas:
            raise vol.Invalid(f"expected one of {', '.join(schemas)}", path=["type"])
        entry = schemas[kind](value)
        classifier = None
        if kind == "classifier":
            envkey = entry.get("envkey")
            if envkey is not None and not context.environ.get(envkey):
                raise vol.Invalid(f"environment variable '{envkey}' is not set (or empty)", path=["envkey"])
            classifier = Classifier(
                url=entry["url"],
                key=context.environ[envkey] if envkey else None,
                label=entry["label"],
                threshold=entry["threshold"],
                timeout=entry["timeout"],
                fail_closed=entry["on_error"] == "closed",
            )
        return Guard(
            name="",  # named by the section, below
            type=kind,
            on_requests=entry["when"] in ("request", "both"),
            on_answers=entry["when"] in ("answer", "both"),
            action=entry["action"],
            answer_blocks=entry["block_as"] == "answer",
            message=entry["message"],
            mask=entry["mask"],
            rules=_rules(entry) if kind != "classifier" else (),
            classifier=classifier,
        )

    return validate


def _rules(entry: dict[str, Any]) -> tuple[Rule, ...]:
    if entry["type"] == "pii":
        return tuple(DETECTORS[name]() for name in entry["detect"])
    rules = []
    for index, given in enumerate(entry["patterns"]):
        pattern, name = (given, None) if isinstance(given, str) else (given["pattern"], given.get("name"))
        try:
            compiled = compile_pattern(pattern, tuple(entry["flags"]))
        except PatternError as exc:
            raise vol.Invalid(
                f"RE2 refuses this pattern ({exc}): guards run in linear time, so backreferences, "
                "lookaround and very large repetitions are not allowed",
                path=["patterns", index],
            ) from None
        window = longest_match(pattern) or entry["stream_window"]
        rules.append(Rule(name or f"pattern {index + 1}", compiled, within(window)))
    return tuple(rules)


def guards_section(context: CheckContext) -> Validator:
    """`guards:`: named guards, each a Guard carrying its name."""
    entry = guard_entry(context)

    def validate(value: Any) -> dict[str, Guard]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise vol.Invalid("expected named guards")
        guards, errors = {}, []
        for name, given in value.items():
            try:
                guard = entry(given)
            except vol.MultipleInvalid as exc:
                errors += [vol.Invalid(error.msg, path=[name, *error.path]) for error in exc.errors]
                continue
            except vol.Invalid as exc:
                errors.append(vol.Invalid(exc.msg, path=[name, *exc.path]))
                continue
            guards[str(name)] = replace(guard, name=str(name))
        if errors:
            raise vol.MultipleInvalid(errors)
        return guards

    return validate
