"""Everything a plug-in (a module of `mappers/` or `prompters/`) may use of the proxy: it imports
from here and nowhere else of ours, which tests/unit/test_architecture.py checks. See docs/extending.md."""

from mooltiproxy.config.plugin_specs import MapperSpec, PrompterSpec, StreamTranslator
from mooltiproxy.config.settings import Endpoint, TargetInfo
from mooltiproxy.core.errors import ProxyError
from mooltiproxy.core.mapping import FanOut, Note, Streamed
from mooltiproxy.serving.context import MapperContext
from mooltiproxy.translation.kinds import (
    ANTHROPIC_MESSAGES,
    OPENAI_CHAT,
    OPENAI_COMPATIBLE,
    OPENAI_COMPLETIONS,
    OPENAI_RESPONSES,
    TGI_GENERATE,
)
from mooltiproxy.translation.marks import mapper, prompter
from mooltiproxy.translation.prompting import (
    DEFAULT_SYSTEM_PROMPT,
    plain_messages,
    render_chat,
    template_of,
    without_bos,
)
from mooltiproxy.translation.sse import frame, json_event, named_event

__all__ = [
    "ANTHROPIC_MESSAGES",
    "DEFAULT_SYSTEM_PROMPT",
    "OPENAI_CHAT",
    "OPENAI_COMPATIBLE",
    "OPENAI_COMPLETIONS",
    "OPENAI_RESPONSES",
    "TGI_GENERATE",
    "Endpoint",
    "FanOut",
    "MapperContext",
    "MapperSpec",
    "Note",
    "PrompterSpec",
    "ProxyError",
    "StreamTranslator",
    "Streamed",
    "TargetInfo",
    "frame",
    "json_event",
    "mapper",
    "named_event",
    "plain_messages",
    "prompter",
    "render_chat",
    "template_of",
    "without_bos",
]
