"""The one YAML loader for anything read from a repository: manifests and `.coalmine.yaml`.

The repository is input from people with merge rights, not from the bot's operators, so YAML
is loaded with a safe loader that also refuses alias "bombs" (a few anchors referencing each
other expand to billions of nodes once serialised), recursive structures, documents nested too
deeply, and mappings that repeat a key. It is pure (text in, data out) so that the config reader
and the manifest renderer share it without importing each other.

Errors are ManifestError (bot.errors) prefixed with the source, for the PR comment.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from bot.errors import ManifestError

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class LoadLimits:
    """Bounds on one YAML file; bot.manifests.Limits extends them with rendering's own."""

    max_file_bytes: int = 1024 * 1024  # one file
    max_alias_nodes: int = 10_000  # nodes that alias expansion may add to one document
    max_depth: int = 100  # nesting of mappings and sequences in one document


DEFAULT_LIMITS = LoadLimits()


def safe_load_all(text: str, source: str, limits: LoadLimits = DEFAULT_LIMITS) -> list[Any]:
    """Every document of `text` (None for an empty one), refusing alias bombs and cycles.

    Errors are ManifestError prefixed with `source: `. Used for any YAML from a repository.
    """
    if len(text.encode()) > limits.max_file_bytes:
        raise ManifestError(
            f"{source}: larger than the {limits.max_file_bytes} bytes allowed for one file"
        )
    return [doc for _index, doc in documents(text, source, limits)]


def documents(
    text: str,
    source: str,
    limits: LoadLimits,
    on_composed: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(number counting from 1, data) for each document, so callers can say which one is wrong.

    The size of `text` is the caller's to check (safe_load_all does; the renderer reads files
    with a limit already). `on_composed` is told how many nodes each document composed before
    any Python object is built from it, so a caller's memory budget can stop there by raising.
    """
    loader = _GuardedLoader(text)
    loader.limits, loader.on_composed = limits, on_composed
    number = 1  # of the document being read, for error messages
    try:
        while loader.check_data():
            yield number, loader.get_data()
            number += 1
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source}: document {number}: invalid YAML: {exc}") from None
    except _UnsafeYAML as exc:
        raise ManifestError(f"{source}: document {number}: {exc}") from None
    except _DuplicateKey as exc:
        raise ManifestError(f"{source}:{exc.line}: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{source}: document {number}: nested too deeply") from None
    finally:
        loader.dispose()


class _UnsafeYAML(Exception):
    """Well-formed YAML that is refused: an alias bomb, a recursive or a too deep structure."""


class _DuplicateKey(Exception):
    """A mapping that names one key twice; `line` counts from 1."""

    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line
        super().__init__(f"duplicate key {_shown_key(key)} (first at line {first_line})")


class _GuardedLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """A safe loader that checks each composed document before constructing Python objects,
    and refuses a mapping that repeats a key: PyYAML keeps the last value silently, while
    kubectl refuses the file, so what was reviewed and what gets applied could differ."""

    limits: LoadLimits = DEFAULT_LIMITS
    on_composed: Callable[[int], None] | None = None

    def get_node(self) -> Node | None:
        node = super().get_node()
        if node is not None:
            composed = _check_shape(node, self.limits)
            if self.on_composed is not None:
                self.on_composed(composed)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            _refuse_repeated_keys(self, node)
        return super().construct_mapping(node, deep=deep)


def _refuse_repeated_keys(loader: Any, node: MappingNode) -> None:
    """Keys written in this mapping itself; `<<` merges may override, as YAML intends."""
    first_lines: dict[Any, int] = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            continue  # the constructor refuses it with its own message
        line = key_node.start_mark.line + 1
        if key in first_lines:
            raise _DuplicateKey(key, line, first_lines[key])
        first_lines[key] = line


def _shown_key(key: Any) -> str:
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _check_shape(node: Node, limits: LoadLimits) -> int:
    """Refuses documents too deep, recursive, or whose aliases expand them too much; returns
    how many nodes were composed (what the document costs in memory).

    Aliases make the composed graph share nodes. The expanded size of a node is 1 plus that of
    its children, memoised per node, so counting takes time linear in the graph even for a
    bomb. A node reached again while it is still being counted is a recursive structure.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(node, False)]
    while stack:
        current, children_counted = stack.pop()
        key = id(current)
        if children_counted:
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(current))
            open_nodes.discard(key)
        elif key not in sizes:
            open_nodes.add(key)  # the path from the root to this node
            if len(open_nodes) > limits.max_depth:
                raise _UnsafeYAML(f"refused: nested deeper than {limits.max_depth} levels")
            stack.append((current, True))
            for child in _children(current):
                if id(child) in open_nodes:
                    raise _UnsafeYAML("refused: the document refers to itself through an alias")
                if id(child) not in sizes:
                    stack.append((child, False))
    added_by_aliases = sizes[id(node)] - len(sizes)
    if added_by_aliases > limits.max_alias_nodes:
        raise _UnsafeYAML(
            f"refused: aliases expand the document by {added_by_aliases} nodes, "
            f"more than the {limits.max_alias_nodes} allowed (an alias bomb?)"
        )
    return len(sizes)


def _children(node: Node) -> Iterator[Node]:
    if isinstance(node, SequenceNode):
        yield from node.value
    elif isinstance(node, MappingNode):
        for key, value in node.value:
            yield key
            yield value
