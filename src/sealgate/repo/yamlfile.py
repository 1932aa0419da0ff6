"""YAML documents read strictly, with the line of every value, for errors a person can find in the file.

PyYAML's loaders return plain values and forget where they came from, and they keep the last of two equal keys
without a word: a metadata file naming AllowedAPKSigningKeys twice would silently pin the wrong signer. So the file
is composed into nodes (PyYAML's own parser, safe tags only) and turned into values here, refusing repeated keys
and aliases (a few lines that would expand into gigabytes), and recording the line of each key, and of each item
of a list, by its path from the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from sealgate.errors import MetadataError

#: A metadata or configuration file larger than this is refused before it is parsed.
MAX_YAML_SIZE = 4 * 1024 * 1024

Path_ = tuple[str | int, ...]
#: libyaml's parser where PyYAML was built with it (Debian's and PyPI's wheels are): ten times faster.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class YamlDocument:
    """The values of one YAML file, and where each came from."""

    path: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set, repr=False)
    constructor: yaml.SafeLoader = field(default_factory=lambda: yaml.SafeLoader(""), repr=False)

    def line(self, *keys: str | int) -> int | None:
        """The 1-based line of the value at `keys` (or of the nearest enclosing one that has a line)."""
        path: Path_ = tuple(keys)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, message: str, *keys: str | int) -> MetadataError:
        return MetadataError(self.path, self.line(*keys), message)

    def text(self, key: str) -> str | None:
        """A top-level value as text (numbers as written), None when absent; MetadataError for a list or a flag."""
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(f"{key} must be text", key)
        return str(value)


def load_yaml(path: str | os.PathLike[str]) -> YamlDocument:
    """Read and parse a YAML file; MetadataError (with the line) for anything that is not well-formed."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_YAML_SIZE + 1)
    except OSError as exc:
        raise MetadataError(name, None, f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_YAML_SIZE:
        raise MetadataError(name, None, f"larger than {MAX_YAML_SIZE >> 20} MiB; not a metadata file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(name, _line_of_offset(raw, exc.start), "not valid UTF-8") from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDocument:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise MetadataError(name, line, f"not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise MetadataError(name, None, f"not valid YAML: {exc}") from None
    document = YamlDocument(name, None)
    if node is None:
        document.data = {}
        return document
    document.lines[()] = node.start_mark.line + 1
    document.data = _value(node, (), document)
    return document


def _value(node: yaml.Node, path: Path_, document: YamlDocument) -> Any:
    if isinstance(node, yaml.CollectionNode):
        # An alias makes two paths share one node: refused, so that a few lines cannot expand into gigabytes.
        if id(node) in document.seen:
            raise MetadataError(document.path, node.start_mark.line + 1, "YAML aliases (*name) are not allowed here")
        document.seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise MetadataError(document.path, key_node.start_mark.line + 1, "a key must be a plain value")
            key = str(_scalar(key_node, document))
            if key in result:
                raise MetadataError(
                    document.path, key_node.start_mark.line + 1, f"{key!r} appears twice; which one is meant?"
                )
            document.lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _value(value_node, (*path, key), document)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            document.lines[(*path, index)] = item.start_mark.line + 1
            items.append(_value(item, (*path, index), document))
        return items
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node, document)


def _scalar(node: yaml.ScalarNode, document: YamlDocument) -> Any:
    """A scalar's value by its resolved tag (int, float, bool, null, timestamp, string), as the safe loader does."""
    try:
        value = document.constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise MetadataError(document.path, node.start_mark.line + 1, f"bad value: {exc}") from None
    document.constructor.constructed_objects.clear()
    return value


def _line_of_offset(raw: bytes, offset: int) -> int:
    return raw.count(b"\n", 0, offset) + 1
