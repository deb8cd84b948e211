"""Reading text and files from outside within limits: YAML by size, depth and alias expansion, files by kind and size.

A topology, a trace, a population CSV or a hardware profile is data from outside. Before anything walks it, the
text is limited in size, nesting depth and alias expansion (`load_yaml`, as hardened YAML loaders do: a document
whose aliases expand past a node budget is refused, never expanded). Files must be regular files within a size
limit (`file_problem`): a FIFO would block the reader forever, a device file never ends, a sparse file of
gigabytes would be read whole.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from testbed.base.keypaths import format_key_path

MAX_TOPOLOGY_BYTES = 256 << 10  # real topologies are a few KB; 256 KiB parse in under a second
MAX_YAML_DEPTH = 32  # the schema nests 5 levels deep (networks.<n>.radio.tail[i].ms)
MAX_YAML_NODES = 50_000  # scalars, lists and mappings after every alias is expanded where it is used
MAX_TRACE_BYTES = 64 << 20  # the largest Mahimahi trace here is 3.4 MB (TMobile-LTE-driving.down)
MAX_WEIGHTS_BYTES = 2 << 30  # a ResNet-50 state dict is about 100 MB
MAX_IMAGE_BYTES = 64 << 20
MAX_POPULATION_BYTES = 64 << 20  # a population CSV: a few dozen bytes per device
MAX_IMAGE_FILES = 10_000  # files looked at under model.image_dir (the pools decode every image they use)


class YamlLimit(ValueError):
    """A YAML text beyond the size, depth or alias-expansion limits; `path` is the key path where known."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


# ---------------------------------------------------------------- YAML text
class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops composing past MAX_YAML_DEPTH (the composer recurses: 10,000 levels would raise
    RecursionError) and past MAX_YAML_NODES nodes composed."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._composed = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        self._composed += 1
        if self._depth > MAX_YAML_DEPTH or self._composed > MAX_YAML_NODES:
            line = self.peek_event().start_mark.line + 1
            what = f"nested more than {MAX_YAML_DEPTH} levels deep" if self._depth > MAX_YAML_DEPTH \
                else f"more than {MAX_YAML_NODES} nodes"
            raise YamlLimit(f"line {line}: {what}")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> Any:
    """yaml.safe_load within the limits; YamlLimit (a ValueError) or yaml.YAMLError otherwise."""
    if len(text) > MAX_TOPOLOGY_BYTES:
        raise YamlLimit(f"{len(text)} characters; allowed: at most {MAX_TOPOLOGY_BYTES}")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded where it is used (memoised, so an alias bomb is
    counted in linear time, never expanded); YamlLimit past MAX_YAML_NODES or MAX_YAML_DEPTH, naming the key
    path where the expansion happens, or on an alias that contains itself."""
    size: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, expanded depth), both capped
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            on_path.discard(key)
            n = 1 + sum(size[id(k)][0] for k in kids)
            depth = 1 + max((size[id(k)][1] for k in kids), default=0)
            size[key] = (min(n, MAX_YAML_NODES + 1), min(depth, MAX_YAML_DEPTH + 1))
            continue
        if key in size:
            continue
        if key in on_path:
            raise YamlLimit("an alias refers to a node that contains it (a recursive document)")
        on_path.add(key)
        stack.append((node, True))
        stack += [(k, False) for k in kids if id(k) not in size]
    n, depth = size[id(root)]
    if n > MAX_YAML_NODES:
        raise YamlLimit(f"aliases expand to more than {MAX_YAML_NODES} nodes", _where(root, size))
    if depth > MAX_YAML_DEPTH:
        raise YamlLimit(f"aliases expand to more than {MAX_YAML_DEPTH} levels deep")
    return n


def _where(node: yaml.Node, size: dict[int, tuple[int, int]]) -> str:
    """The key path of the deepest mapping value that alone expands past the node budget."""
    parts: list[Any] = []
    while isinstance(node, yaml.MappingNode):
        over = [(k, v) for k, v in node.value if size[id(v)][0] > MAX_YAML_NODES]
        if not over:
            break
        k, node = over[0]
        parts.append(k.value if isinstance(k, yaml.ScalarNode) else "?")
    return format_key_path(parts)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


# ---------------------------------------------------------------- files
def file_problem(path: str, max_bytes: int, folder: bool = False) -> str | None:
    """Why `path` is not a regular file (a folder, with `folder`) within max_bytes; None when it is. Uses
    os.stat, never open(): a FIFO would block the opener until a writer comes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "no such folder" if folder else "no such file"
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, no permission
        return f"not a usable path: {getattr(e, 'strerror', None) or e}"
    if folder:
        return None if stat.S_ISDIR(st.st_mode) else f"not a folder ({_kind(st.st_mode)})"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_kind(st.st_mode)}); allowed: a regular file"
    if st.st_size > max_bytes:
        return f"{st.st_size:,} bytes; allowed: a regular file of at most {max_bytes:,} bytes"
    return None


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a device file"), (stat.S_ISBLK, "a device file"), (stat.S_ISSOCK, "a socket"))
    for test, name in kinds:
        if test(mode):
            return name
    return "not a regular file"
