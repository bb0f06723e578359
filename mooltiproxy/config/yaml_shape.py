"""Checks the shape of a YAML text before it is built into objects.

PyYAML builds an alias bomb in a millisecond (aliased nodes are shared), but everything that walks
the result afterwards (validation, error messages) pays for every repetition. So the events are
read once first, without building anything: the nesting depth, the number of nodes once aliases
are expanded, duplicate keys, and numbers no config has a use for. Each problem names the file, the
line and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml
from yaml.resolver import Resolver

from mooltiproxy.core.errors import ConfigError

MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000  # aliases expanded: what validation will walk
MAX_INTEGER_DIGITS = 30
_SHOWN = 60  # characters of a key quoted in a message
_MERGE = "<<"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_NODE_EVENTS = (yaml.ScalarEvent, yaml.AliasEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent)


@dataclass(slots=True)
class _Collection:
    path: str
    is_mapping: bool
    anchor: str | None
    nodes_before: int
    keys: dict[str, int] = field(default_factory=dict)  # key -> line
    key: str | None = None  # the key whose value comes next; None while a key is expected
    index: int = 0


def check_yaml_shape(text: str, source: Path) -> None:
    """Raises ConfigError naming the first problem; YAML syntax errors are left to the loader."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_FILE_BYTES:
        raise ConfigError([f"{source}: the file is {size:,} bytes; a config may have at most {MAX_FILE_BYTES:,}"])
    _Walk(source).run(text)


class _Walk:
    def __init__(self, source: Path):
        self.source = source
        self.stack: list[_Collection] = []
        self.anchors: dict[str, int] = {}  # anchor -> nodes it stands for
        self.nodes = 0
        self.resolver = Resolver()

    def run(self, text: str) -> None:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, _NODE_EVENTS):
                self.node(event)
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                done = self.stack.pop()
                if done.anchor is not None:
                    self.anchors[done.anchor] = self.nodes - done.nodes_before
                self.value_done()

    def node(self, event: yaml.NodeEvent) -> None:
        parent = self.stack[-1] if self.stack else None
        # The mapping this node is a key of, if it is one.
        keyed = parent if parent is not None and parent.is_mapping and parent.key is None else None
        path = self.child_path(parent)
        added = 1
        if isinstance(event, yaml.AliasEvent):
            if any(collection.anchor == event.anchor for collection in self.stack):
                self.fail(event, path, f"the alias *{event.anchor} is inside what it names (a loop)")
            added = self.anchors.get(event.anchor or "", 1)
        self.nodes += added
        if self.nodes > MAX_NODES:
            self.fail(
                event, path, f"the document expands to more than {MAX_NODES:,} values (aliases repeat what they name)"
            )
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            if keyed is not None:
                self.fail(event, path, "a key must be a plain value")
            if len(self.stack) >= MAX_DEPTH:
                self.fail(event, path, f"nested more than {MAX_DEPTH} levels deep")
            mapping = isinstance(event, yaml.MappingStartEvent)
            self.stack.append(_Collection(path, mapping, event.anchor, self.nodes - 1))
            return
        if isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                self.anchors[event.anchor] = 1
            if keyed is not None:
                self.key(keyed, event)
                return
            self.check_number(event, path)
        elif keyed is not None:  # an alias as a key
            keyed.key = f"*{event.anchor}"
            return
        self.value_done()

    def key(self, mapping: _Collection, event: yaml.ScalarEvent) -> None:
        key, line = event.value, _line(event)
        if key in mapping.keys and key != _MERGE:
            where = f"{mapping.path}.{_shown(key)}" if mapping.path else _shown(key)
            self.fail(event, where, f"duplicate key (first on line {mapping.keys[key]}); YAML would keep only the last")
        mapping.keys[key] = line
        mapping.key = key

    def value_done(self) -> None:
        if self.stack:
            parent = self.stack[-1]
            if parent.is_mapping:
                parent.key = None
            else:
                parent.index += 1

    def child_path(self, parent: _Collection | None) -> str:
        if parent is None:
            return ""
        if parent.is_mapping:
            step = _shown(parent.key) if parent.key is not None else ""
        else:
            step = str(parent.index)
        return f"{parent.path}.{step}" if parent.path and step else parent.path or step

    def check_number(self, event: yaml.ScalarEvent, path: str) -> None:
        explicit = event.tag not in (None, "!")
        tag = event.tag if explicit else self.resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
        digits = sum(character.isdigit() for character in event.value)
        if tag == _INT and digits > MAX_INTEGER_DIGITS:
            self.fail(event, path, f"an integer of {digits} digits")
        if tag == _FLOAT and ("inf" in event.value.lower() or "nan" in event.value.lower()):
            self.fail(event, path, f"'{_shown(event.value)}' is not a finite number")

    def fail(self, event: yaml.Event, path: str, problem: str) -> NoReturn:
        raise ConfigError([f"{self.source}:{_line(event)}: {_shown(path, 100) or 'the document'}: {problem}"])


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


def _shown(text: str, limit: int = _SHOWN) -> str:
    """The text, or its start and end around an ellipsis when it is longer than the limit."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return f"{text[:half]}...{text[-half:]}"
