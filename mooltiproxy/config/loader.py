"""Reads config.yaml, validates it, and resolves every name into a ready object.

All problems are collected and raised together as one ConfigError, each naming the key's path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import voluptuous as vol
import yaml

from mooltiproxy.config.chains import chained_mapper, chained_translators
from mooltiproxy.config.declared import default_of, section_values
from mooltiproxy.config.guarded_routes import guard_point, guarded_chains, pass_through_view, route_guards
from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec
from mooltiproxy.config.registry import RegistryError, find_mappers, find_prompters, positional_arity
from mooltiproxy.config.schema import build_schema
from mooltiproxy.config.settings import (
    PASS_THROUGH_METHODS,
    TRANSLATED_METHODS,
    ClientKey,
    Config,
    Endpoint,
    GuardSettings,
    StreamTranslatorFactory,
    SystemSettings,
    Target,
    key_digest,
    limits_of,
)
from mooltiproxy.config.template_entries import builtin_templates
from mooltiproxy.config.templates import PromptTemplate
from mooltiproxy.config.yaml_shape import check_yaml_shape
from mooltiproxy.core.errors import ConfigError
from mooltiproxy.guardrails.route import RouteGuards
from mooltiproxy.guardrails.views import View


def load_config(path: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    source = Path(path)
    raw = read_yaml(source)
    try:
        plugins = _plugin_folder(raw, source)
        mappers = find_mappers(plugins)
        prompters = find_prompters(plugins)
    except RegistryError as exc:
        raise ConfigError([str(exc)]) from None
    try:
        document = build_schema(raw, mappers, prompters, environ, source.parent)(raw)
    except vol.MultipleInvalid as exc:
        raise ConfigError(sorted({_describe(error) for error in exc.errors})) from None
    return _Builder(source, document, mappers, prompters, environ).build()


def _plugin_folder(raw: dict, source: Path) -> Path:
    """`system.plugins`, read before the rest: the mappers and prompters it holds are names the
    schema checks."""
    system = raw.get("system")
    folder = system.get("plugins") if isinstance(system, dict) else None
    if folder is None:
        default: Path = default_of(SystemSettings, "plugins")
        return source.parent / default
    if not isinstance(folder, str):
        raise ConfigError(["system.plugins: expected the path of a folder"])
    return source.parent / folder


def read_yaml(source: Path) -> dict:
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        hint = " (mooltiproxy init writes one from config.template.yaml)" if source.name == "config.yaml" else ""
        raise ConfigError([f"cannot read config file '{source}': {exc.strerror or exc}{hint}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        check_yaml_shape(text, source)
        document = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_syntax_error(exc, text, source)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: YAML error: {exc}"]) from None
    if document is None:
        raise ConfigError([f"{source}: the file is empty"])
    if not isinstance(document, dict):
        raise ConfigError([f"{source}: expected a mapping of sections (system, cerbere, targets, templates)"])
    return document


def _yaml_syntax_error(exc: yaml.MarkedYAMLError, text: str, source: Path) -> str:
    """Where the mistake is, which is not always where PyYAML noticed it: `port 8000` (no colon) is
    read with the next line as one value, whose colon is the error; an unclosed quote is noticed at
    the end of the file, and began where the scan began."""
    problem = " ".join(part for part in (exc.context, exc.problem) if part)
    mark = exc.problem_mark or exc.context_mark
    if exc.context_mark is not None and exc.problem and "end of stream" in exc.problem:
        mark = exc.context_mark
    if mark is None:
        return f"{source}: YAML syntax error: {problem}"
    line = mark.line
    if exc.problem == "mapping values are not allowed here":
        lines = text.splitlines()
        before = next((index for index in range(line - 1, -1, -1) if lines[index].strip()), None)
        if before is not None and ":" not in lines[before] and not lines[before].lstrip().startswith(("-", "#")):
            return (
                f"{source}:{before + 1}: YAML syntax error: {lines[before].strip()!r} has no ':' after its key "
                "(YAML read it and the next line as one value)"
            )
    return f"{source}:{line + 1}:{mark.column + 1}: YAML syntax error: {problem}"


def _describe(error: vol.Invalid) -> str:
    where = ".".join(str(part) for part in error.path) or "config"
    message = error.msg
    if message == "extra keys not allowed":
        message = "unknown key"
    elif message == "required key not provided":
        message = "required key is missing"
    return f"{where}: {message}"


def _adapt(function: Callable, arguments: int) -> Callable:
    """Wraps a user function written with fewer arguments into the proxy's calling convention."""
    accepted = positional_arity(function)
    if accepted >= arguments:
        return function
    return lambda *given: function(*given[:accepted])


class _Builder:
    """Turns the validated document into settings objects with resolved callables."""

    def __init__(
        self,
        source: Path,
        document: dict,
        mappers: Mapping[str, MapperSpec],
        prompters: Mapping[str, PrompterSpec],
        environ: Mapping[str, str],
    ):
        self.source = source
        self.document = document
        self.mappers = mappers
        self.prompters = prompters
        self.environ = environ
        self.warnings: list[str] = []
        self.notes: list[str] = []

    def build(self) -> Config:
        self.templates = {
            name: PromptTemplate(name=name, **entry) for name, entry in self.document["templates"].items()
        }
        targets_section = dict(self.document["targets"])
        default = targets_section.pop("default")
        self.guards = self.document["guards"]
        system = self._system(self.document["system"])
        self.system_guards = system.guards
        return Config(
            source=self.source,
            system=system,
            guard=self._guard(self.document["cerbere"]),
            default_target=default,
            targets={name: self._target(name, entry) for name, entry in targets_section.items()},
            templates=self.templates,
            clients=self._clients(self.document["clients"]),
            guards=self.guards,
            warnings=tuple(self.warnings),
            notes=tuple(self.notes),
        )

    def _system(self, section: dict) -> SystemSettings:
        return SystemSettings(**section_values(SystemSettings, section, self.source.parent))

    def _guard(self, section: dict) -> GuardSettings:
        return GuardSettings(**section_values(GuardSettings, section, self.source.parent))

    def _clients(self, section: dict) -> tuple[ClientKey, ...]:
        clients = []
        owners: dict[bytes, str] = {}
        for name, entry in section.items():
            if "sha256" in entry:
                digest = bytes.fromhex(entry["sha256"])
            else:
                digest = key_digest(self.environ[entry["envkey"]])
            if digest in owners:
                raise ConfigError([f"clients.{name}: the same key as clients.{owners[digest]}"])
            owners[digest] = name
            targets = frozenset(entry["targets"]) if entry["targets"] is not None else None
            limits = limits_of(entry["limits"]) if entry["limits"] is not None else None
            clients.append(ClientKey(name, digest, targets, limits))
        return tuple(clients)

    def _target(self, name: str, entry: dict) -> Target:
        key = entry.get("key") or None
        if key is not None:
            self.warnings.append(f"targets.{name}.key: an upstream key is written in the config file; prefer envkey")
        elif "envkey" in entry:
            key = self.environ[entry["envkey"]]
        urls = [entry["url"]] if "url" in entry else entry["urls"]
        return Target(
            name=name,
            urls=tuple(url.rstrip("/") for url in urls),
            key=key,
            verify=entry["verify"] if isinstance(entry["verify"], bool) else self.source.parent / entry["verify"],
            endpoints={
                incoming: self._endpoint(f"targets.{name}.mapping.{incoming}", incoming, spec, entry.get("guards", ()))
                for incoming, spec in entry["mapping"].items()
            },
            fallback=tuple(entry["fallback"]),
            models=tuple(entry["models"]),
            model_aliases={name: alias for name, alias in entry["models"].items() if alias}
            if isinstance(entry["models"], dict)
            else {},
            **section_values(Target, entry, self.source.parent),
        )

    def _endpoint(self, where: str, incoming: str, spec: dict, target_guards: tuple[str, ...]) -> Endpoint:
        upstream_path = spec.get("path", incoming)
        template_name = spec.get("template")
        prompter_name = spec.get("prompter")
        template = None
        if template_name is not None:
            template = self.templates.get(template_name) or builtin_templates()[template_name]
        stream_path = spec.get("stream_path")
        if stream_path is None:
            # TGI's streaming twin of /generate; elsewhere (OpenAI-compatible servers) the same path.
            stream_path = upstream_path + "_stream" if upstream_path.endswith("/generate") else upstream_path
        ins = [name for name in spec["in"] if name != "identity"]
        outs = [name for name in spec["out"] if name != "identity"]
        translated = bool(ins or outs)
        if "methods" in spec:
            methods = frozenset(spec["methods"])
        else:
            methods = TRANSLATED_METHODS if translated else PASS_THROUGH_METHODS
        request_links = [_adapt(self.mappers[name].function, 3) for name in ins]
        answer_links = [_adapt(self.mappers[name].function, 3) for name in outs]
        translators = self._translators(outs)
        guarding = self._guarding(where, incoming, upstream_path, spec, ins, outs, target_guards)
        if guarding is not None:
            point = self._guard_point(ins, outs) if ins or outs else None
            request_links, answer_links, translators = guarded_chains(
                guarding, request_links, answer_links, translators, point[1:] if point else None
            )
        return Endpoint(
            incoming_path=incoming,
            upstream_path=upstream_path,
            methods=methods,
            stream_path=stream_path,
            stream_translator=chained_translators(translators) if translators else None,
            # The link facing the target has a say on its errors.
            error_hook=self.mappers[outs[0]].error_hook if outs else None,
            front=self.mappers[ins[0]].takes if ins else None,
            request_mapper_name=" > ".join(ins) or "identity",
            answer_mapper_name=" > ".join(outs) or "identity",
            # None is identity: the bytes relayed, never parsed.
            request_mapper=chained_mapper(request_links) if request_links else None,
            answer_mapper=chained_mapper(answer_links) if answer_links else None,
            prompter_name=prompter_name,
            prompter=_adapt(self.prompters[prompter_name].function, 4) if prompter_name else None,
            template=template,
            **section_values(Endpoint, spec, self.source.parent),
            tool_parser=self._tool_parser(where, spec.get("tool_parser"), template),
            reasoning_parser=self._reasoning_parser(where, spec["reasoning_parser"], template),
            guarding=guarding,
        )

    def _guard_point(self, ins: list[str], outs: list[str]) -> tuple[View, int, int] | None:
        """Where a translated route's guards go in its chains (see guarded_routes.guard_point)."""
        return guard_point(
            [(self.mappers[name].takes, self.mappers[name].gives) for name in ins],
            [(self.mappers[name].takes, self.mappers[name].gives) for name in outs],
        )

    def _guarding(
        self,
        where: str,
        incoming: str,
        upstream_path: str,
        spec: dict,
        ins: list[str],
        outs: list[str],
        target_guards: tuple[str, ...],
    ) -> RouteGuards | None:
        """The proxy's, the target's and the route's guards, in that order, where they can read
        the route's text; a route's own guards where they cannot are an error."""
        names = list(dict.fromkeys([*self.system_guards, *target_guards, *spec.get("guards", ())]))
        choosable = {name: self.guards[name] for name in spec.get("client_guards", ())}
        if not names and not choosable:
            return None
        point = self._guard_point(ins, outs) if ins or outs else None
        view = point[0] if point is not None else None
        if not (ins or outs):
            view = pass_through_view(incoming, upstream_path)
        if view is None:
            if spec.get("guards") or choosable:
                raise ConfigError(
                    [
                        f"{where}.guards: guards read OpenAI Chat (a translated route's pivot, or a relayed "
                        "/chat/completions) or TGI's /generate (translated or relayed), and this route carries neither"
                    ]
                )
            self.notes.append(f"{where}: guards {', '.join(names)} do not apply (no text they read)")
            return None
        guards = tuple(self.guards[name] for name in names)
        if point is None:
            return route_guards(guards, choosable, view)
        at_answer = point[2]
        factories = [self.mappers[name].stream_translator for name in outs[at_answer:]]
        return route_guards(
            guards,
            choosable,
            view,
            [_adapt(self.mappers[name].function, 3) for name in outs[at_answer:]],
            [factory for factory in factories if factory is not None] if None not in factories else (),
            tail_reads_raw=at_answer == 0,
        )

    def _reasoning_parser(self, where: str, parser: str, template: PromptTemplate | None) -> str | None:
        """`auto`: the parser of the template's own reasoning markers, else none."""
        if parser != "auto":
            return None if parser == "none" else parser
        if template is None or template.reasoning_format is None:
            return None
        found = template.reasoning_format
        self.notes.append(f"{where}: reasoning_parser auto picked {found} (the markers of template '{template.name}')")
        return found

    def _tool_parser(self, where: str, parser: str | None, template: PromptTemplate | None) -> str | None:
        """`auto`: the parser of the template's own tool-call markers, else TGI's grammar."""
        if parser != "auto":
            return parser
        if template is not None and template.tool_call_format is not None:
            found = template.tool_call_format
            self.notes.append(f"{where}: tool_parser auto picked {found} (the markers of template '{template.name}')")
            return found
        self.notes.append(
            f"{where}: tool_parser auto picked grammar: the template writes no tool-call format a parser reads"
        )
        return "grammar"

    def _translators(self, names: list[str]) -> list[StreamTranslatorFactory] | None:
        """The stream translators of an answer chain, one per link, each fed by the one before;
        None when a link has none (the route does not stream)."""
        factories = [self.mappers[name].stream_translator for name in names]
        if not factories or None in factories:
            return None
        return [factory for factory in factories if factory is not None]
