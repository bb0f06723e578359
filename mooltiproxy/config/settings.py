"""The validated configuration, with every name already resolved into a ready object."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from mooltiproxy.config import checks
from mooltiproxy.config.declared import setting
from mooltiproxy.config.templates import PromptTemplate
from mooltiproxy.guardrails.guard import Guard
from mooltiproxy.guardrails.route import RouteGuards
from mooltiproxy.parsers.reasoning import REASONING_PARSERS
from mooltiproxy.parsers.tools import TOOL_PARSERS

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")

# Mappers are called as mapper(payload, endpoint, context), whatever signature they were written with;
# the context is the request's (serving.context.RequestContext), a layer above the configuration.
Mapper = Callable[[Any, "Endpoint", Any], Any]
# Builds the translator of one streamed answer: factory(endpoint, context).
StreamTranslatorFactory = Callable[["Endpoint", Any], Any]
# An answer mapper's say on a target's error: hook(error, payload_sent, context) returns a payload
# to send once more instead, or None; it may raise a ProxyError of its own.
ErrorHook = Callable[[Any, Any, Any], Any]
# Prompters are called as prompter(messages, endpoint, tools, switches) -> (prompt, stop_sequences):
# tools are the request's (None without), switches the template's variables for this request
# (enable_thinking, reasoning_effort, ...); a prompter written with fewer arguments never sees them.
Prompter = Callable[[Any, "Endpoint", Any, Mapping[str, Any]], tuple[str, list[str]]]


# How tool calls are read back from generated text (parsers/tools/); `auto` is resolved at load
# time from the template's own markers.
TOOL_PARSER_NAMES = (*TOOL_PARSERS, "auto")
# How a model's reasoning is told from its answer (parsers/reasoning/); `auto`, the default, picks
# the parser of the template's own markers, and none when it has none.
REASONING_PARSER_NAMES = (*REASONING_PARSERS, "auto", "none")

# Methods a route takes when its entry says none: a translated route takes POST; a pass-through one
# every method but CONNECT and TRACE, which are never forwarded.
TRANSLATED_METHODS = frozenset({"POST"})
PASS_THROUGH_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
NEVER_FORWARDED_METHODS = frozenset({"CONNECT", "TRACE"})


@dataclass(frozen=True, slots=True)
class Limits:
    """Rate limits of a client key (or of a target, for all its callers together); None: no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None  # requests in flight, streams included until they end

    def __bool__(self) -> bool:
        return any(
            value is not None for value in (self.requests_per_minute, self.tokens_per_minute, self.max_concurrent)
        )


NO_LIMITS = Limits()


def find_route(routes: Mapping[str, T], path: str) -> T | None:
    """The route of an incoming path: an exact match; an unmapped `/v1/...` path falls back on the
    same path without `/v1` (what OpenAI clients add to a base URL)."""
    found = routes.get(path)
    if found is None and path.startswith("/v1/"):
        found = routes.get(path[3:])
    return found


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One entry of a target's `mapping`: how an incoming path is forwarded and translated."""

    incoming_path: str
    upstream_path: str
    methods: frozenset[str] = PASS_THROUGH_METHODS
    request_mapper_name: str = "identity"
    answer_mapper_name: str = "identity"
    # None means identity: the body is relayed as bytes, never parsed.
    request_mapper: Mapper | None = None
    answer_mapper: Mapper | None = None
    prompter_name: str | None = None
    prompter: Prompter | None = None
    template: PromptTemplate | None = None
    # TGI parameters used when the client leaves the matching field unset.
    defaults: Mapping[str, Any] = setting(factory=dict, check=checks.section(checks.TGI_DEFAULTS))
    # The system prompt prompters use when a conversation has none (None: the built-in one).
    system_prompt: str | None = setting(None, checks.optional(str))
    # Drop a leading bos token from prompts (TGI's /generate adds it itself).
    strip_bos: bool = setting(True, bool)
    # Images in messages: a text placeholder (for a model that reads text only), a 400 (refuse), or
    # passed to a vision model (vision); URLs only with image_urls, data URLs up to max_image_bytes.
    images: str = setting("placeholder", checks.one_of("placeholder", "refuse", "vision"))
    image_urls: bool = setting(False, bool)
    max_image_bytes: int = setting(5 * 1024 * 1024, checks.integer(1))
    # Variables the template gets on every request (vLLM's chat_template_kwargs): enable_thinking:
    # false turns a Qwen3 model's thinking off on this route, say. A request's effort wins.
    chat_template_kwargs: Mapping[str, Any] = setting(factory=dict, check=checks.section(checks.TEMPLATE_VARIABLES))
    # How tool calls are read back from generated text (TGI's /generate): a name of TOOL_PARSERS,
    # or None (no tools).
    tool_parser: str | None = None
    # How the model's reasoning is told from its answer: a name of REASONING_PARSERS, or None.
    reasoning_parser: str | None = None
    # Where a streamed request goes (TGI: /generate_stream), and what translates its events.
    stream_path: str | None = None
    stream_translator: StreamTranslatorFactory | None = None
    # The API the client speaks here (what the request chain takes), for errors in its shape.
    front: str | None = None
    # Guards of `guards:` applied here, after the proxy's and the target's; and those a client may
    # add to a request by name (its body's `guards`).
    guards: tuple[str, ...] = setting((), checks.names)
    client_guards: tuple[str, ...] = setting((), checks.names)
    # What those guards do on this route, ready (None: no guard applies).
    guarding: RouteGuards | None = None
    # The answer mapper's say on an upstream error.
    error_hook: ErrorHook | None = None


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What is known of a target's model: what it says of itself (TGI's /info, an OpenAI-compatible
    server's /v1/models), with the config's `context_length` first. None: not known."""

    model_id: str | None = None
    context_length: int | None = None  # prompt and answer together
    max_stop_sequences: int | None = None
    max_batch_size: int | None = None  # inputs one request may carry (TEI's max_client_batch_size)
    source: str = "nothing"  # where it was read: "/info", "/v1/models", "the config"
    reachable: bool = False  # the target answered (anything) when it was asked


UNKNOWN = TargetInfo()  # of a target not asked yet


@dataclass(frozen=True, slots=True)
class AddressList:
    """IP addresses and CIDR networks; single addresses are looked up in a set."""

    addresses: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    def __contains__(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return address in self.addresses or (bool(self.networks) and any(address in net for net in self.networks))


def _state_of(value: str | None, folder: Path) -> str | None:
    """A SQLite path relative to the config file; memory as None; a Redis URL as it is."""
    if value is None or value == "memory" or "://" in value:
        return None if value == "memory" else value
    return str(folder / value)


_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _addresses(entries: list[str], folder: Path) -> AddressList:
    addresses = set()
    networks = []
    for entry in entries:
        network = ipaddress.ip_network(entry, strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_IPV4_MAPPED):
            # Client addresses are compared unwrapped (see guard.parse_address).
            mapped = network.network_address.ipv4_mapped
            network = ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
        if network.num_addresses == 1:
            addresses.add(network.network_address)
        else:
            networks.append(network)
    return AddressList(frozenset(addresses), tuple(networks))


def limits_of(section: Mapping[str, int] | None, folder: Path | None = None) -> Limits:
    return Limits(**section) if section else NO_LIMITS


_LIMITS = checks.optional(checks.LIMITS)


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """`cerbere:`"""

    max_tries: int = setting(3, checks.integer(1))
    whitelist: AddressList = setting(factory=AddressList, check=checks.address_list, read=_addresses)
    blacklist: AddressList = setting(factory=AddressList, check=checks.address_list, read=_addresses)
    # Peers whose client_address_header says who the client is.
    trusted_proxies: AddressList = setting(factory=AddressList, check=checks.address_list, read=_addresses)
    # The one header trusted proxies name the client in: X-Forwarded-For or Forwarded.
    client_address_header: str = setting("X-Forwarded-For", checks.client_address_header)
    # 0: a ban lasts until lifted through the admin API (or, without a ban_file, a restart).
    ban_seconds: float = setting(600.0, checks.number(0, exclusive=False))
    ban_file: Path | None = setting(None, checks.optional(str), path=True, restart=True)
    # For every client key that sets none of its own, and for the proxy key.
    default_limits: Limits = setting(NO_LIMITS, _LIMITS, key="limits", read=limits_of)
    master_limits: Limits = setting(NO_LIMITS, _LIMITS, read=limits_of)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    urls: tuple[str, ...]  # balanced round-robin; failing ones are left aside for a while
    key: str | None
    endpoints: Mapping[str, Endpoint]
    # Upstream TLS: verify certificates (True), don't (False), or against this CA bundle.
    verify: bool | Path = True
    # Targets tried in order when this one fails.
    fallback: tuple[str, ...] = ()
    # Model names routed to this target when a request has no `target` header.
    models: tuple[str, ...] = ()
    # Of those, the ones the target knows by another name (claude-sonnet-4-5 -> Qwen3-Coder): the
    # body's `model` is rewritten on translated routes.
    model_aliases: Mapping[str, str] = field(default_factory=dict)
    # A 301 or 302 from the target is followed with the same method and body (else as browsers do).
    preserve_method: bool = setting(False, bool, key="preserveMethod")
    max_connections: int = setting(1024, checks.integer(1))
    # Attempts after the first on connection errors, timeouts, 429, 502, 503, 504.
    retries: int = setting(0, checks.integer(0, 10))
    # False: a new connection per request, for a target not trusted to frame its answers.
    keepalive: bool = setting(True, bool)
    # For all the target's callers together.
    limits: Limits = setting(NO_LIMITS, _LIMITS, read=limits_of)
    # Guards of `guards:` applied on every route of the target that they can read, after the proxy's.
    guards: tuple[str, ...] = setting((), checks.names)
    # Tokens of prompt and answer together; None: as the target says (TGI's /info, /v1/models).
    context_length: int | None = setting(None, checks.optional(checks.integer(2)))

    def find_endpoint(self, path: str) -> Endpoint | None:
        return find_route(self.endpoints, path)


MASTER = "master"  # the client name of the proxy key's holder


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A named client key, kept as the SHA-256 digest of the key only."""

    name: str
    digest: bytes
    # None: every target.
    targets: frozenset[str] | None = None
    # None: the guard's default limits for client keys (the proxy key's are its own).
    limits: Limits | None = None


@dataclass(frozen=True, slots=True)
class SystemSettings:
    """`system:`; a path is relative to the config file."""

    host: str | None = setting(None, checks.optional(str), restart=True)
    port: int = setting(8000, checks.integer(0, 65535), restart=True)
    ssl: bool = setting(False, bool, restart=True)
    certfile: Path = setting(Path("certificates/cert.pem"), str, path=True, restart=True)
    keyfile: Path = setting(Path("certificates/key.pem"), str, path=True, restart=True)
    debug: bool = setting(False, bool)
    timeout: float = setting(300.0, checks.number(0))
    connect_timeout: float = setting(3.05, checks.number(0))
    # How long a request may wait for one of its target's max_connections before a 503.
    queue_timeout: float = setting(30.0, checks.number(0))
    max_body_size: int = setting(10 * 1024 * 1024, checks.integer(1))
    # Request body bytes the process holds at once, all requests together (503 beyond).
    max_inflight_bytes: int = setting(256 * 1024 * 1024, checks.integer(1))
    # A client must send a whole request within this many seconds (slow clients are cut).
    client_timeout: float = setting(60.0, checks.number(0), restart=True)
    # A translated stream the client has heard nothing on for this many seconds gets a keep-alive.
    stream_keep_alive: float = setting(10.0, checks.number(0))
    # CA bundle checking client certificates (mutual TLS); None: no client certificate asked.
    client_ca: Path | None = setting(None, checks.optional(checks.EXISTING_FILE), path=True, restart=True)
    admin_prefix: str = setting("/_proxy/", checks.admin_prefix)
    # Processes serving the port, which the supervisor hands connections to in turn.
    workers: int = setting(1, checks.integer(1, 256), restart=True)
    # Seconds in-flight requests and streams get to finish when the proxy stops.
    shutdown_grace: float = setting(30.0, checks.number(0, exclusive=False))
    log_format: str = setting("text", checks.one_of("text", "json"))  # json: one JSON object per line
    # One access line per request (false: none; the metrics still count every request).
    log_access: bool = setting(True, bool)
    # GET {admin_prefix}metrics without the proxy key.
    metrics_public: bool = setting(False, bool)
    # Where strikes, bans and limits live: None (memory, or cerbere.ban_file's SQLite file),
    # a SQLite file's path, or a redis:// / rediss:// URL whose password is in $state_envkey.
    state: str | None = setting(None, checks.optional(checks.state_location), read=_state_of, restart=True)
    state_envkey: str | None = setting(None, checks.optional(checks.ENV_VAR), restart=True)
    # Seconds a store call may take before local state answers.
    state_timeout: float = setting(0.25, checks.number(0), restart=True)
    # Redis connections per process; more calls at once wait their turn.
    state_connections: int = setting(256, checks.integer(1, 10_000), restart=True)
    # The store down: refuse limited keys (closed), or count locally (open).
    limits_when_store_down: str = setting("open", checks.one_of("open", "closed"), restart=True)
    # Responses API answers kept for previous_response_id: how long, and how large at most.
    responses_ttl: float = setting(24 * 3600.0, checks.number(0))
    responses_max_bytes: int = setting(1024 * 1024, checks.integer(1))
    masterkey: str | None = setting(None, checks.optional(str))
    # The folder whose mappers/ and prompters/ hold the operator's own plug-ins.
    plugins: Path = setting(Path("."), str, path=True)
    # Guards of `guards:` applied on every route that they can read, first.
    guards: tuple[str, ...] = setting((), checks.names)
    # The operator's Unix socket for listing and lifting bans (None: none).
    admin_socket: Path | None = setting(Path("run/mooltiproxy.sock"), checks.optional(str), path=True, restart=True)

    @property
    def limits_fail_closed(self) -> bool:
        return self.limits_when_store_down == "closed"


@dataclass(frozen=True, slots=True)
class Config:
    source: Path
    system: SystemSettings
    guard: GuardSettings
    default_target: str
    targets: Mapping[str, Target]
    templates: Mapping[str, PromptTemplate]
    clients: tuple[ClientKey, ...] = ()
    guards: Mapping[str, Guard] = field(default_factory=dict)  # `guards:`, by name
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the loader chose for the config (tool_parser: auto, say)

    def summary(self) -> str:
        routes = sum(len(target.endpoints) for target in self.targets.values())
        names = ", ".join(
            f"{name}{' (default)' if name == self.default_target else ''}: {len(target.endpoints)} routes"
            for name, target in self.targets.items()
        )
        return f"{len(self.targets)} targets, {routes} routes: {names}"
