"""Reading mapping files safely: a regular file of bounded size, YAML without duplicate keys
or alias bombs, and the folder's files in a stable order. Nothing here validates: that is the
model's (`etl.mapping.model`)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from etl.common.errors import MappingError
from etl.mapping.model import short

MAX_BYTES = 1_000_000     # a mapping is a few KB; anything near this is a mistake or an attack
MAX_ALIAS_NODES = 100_000  # nodes that aliases (*name) may add by repeating what they name

class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: ~10x faster
    """Safe YAML as a mapping needs it: two equal keys are refused (PyYAML keeps the last one
    silently); aliases may not expand a small file into a huge document (a "billion laughs");
    yes/no/on/off stay text (YAML 1.2: only true/false are booleans), so `values: {yes: 是}`,
    `deleted: {value: no}` and a column named `no` mean what they say."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.resolver.Resolver.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # no anchor, no alias: nothing to count (the count is ~15% of a load)
        self.anchors_possible = not isinstance(stream, str) or "&" in stream

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        if self.anchors_possible:
            _check_expansion(node)
        return self.construct_document(node)


_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases would add more than MAX_ALIAS_NODES nodes, or refer to
    themselves, before anything is built from it. The composed graph shares an anchored node
    among its aliases, so its expanded size is counted in one pass over the distinct nodes."""
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) \
            else node.value
        if done:
            open_.discard(id(node))
            size[id(node)] = 1 + sum(size[id(c)] for c in children)
            if size[id(node)] - len(size) > MAX_ALIAS_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases (*name) expand this file to more than "
                    f"{MAX_ALIAS_NODES:,} values: write the values out or use fewer aliases",
                    node.start_mark)
            continue
        if id(node) in size:
            continue
        if id(node) in open_:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to the value that contains it: remove it", node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            twice = key in seen
        except TypeError:  # a list or mapping as a key
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be text or a number", key_node.start_mark) from None
        if twice:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {short(key)!r} appears twice (first at line {seen[key] + 1}); "
                f"keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int | str:
    """An integer of more than 100 characters stays text as written: no code is that long, and
    Python refuses to print one of more than 4,300 digits (a key's message would crash)."""
    if len(node.value) > 100:
        return loader.construct_scalar(node)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_mapping_file(path: str | Path) -> bytes:
    """A mapping file's bytes, read only if it is a regular file of at most MAX_BYTES: never a
    directory, a device (a link to /dev/zero would read forever) or a pipe (opening it would
    wait for a writer)."""
    path = path if isinstance(path, Path) else Path(path)  # named in an error only: display() resolves the path, costly by the 10,000
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise MappingError([f"{display(path)}: no such mapping file"]) from None
    except OSError as e:
        raise MappingError([f"{display(path)}: cannot be read ({e.strerror}): check its permissions"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MappingError([f"{display(path)}: not a regular file (a folder, device or pipe): "
                                f"a mapping is a YAML file"])
        if st.st_size > MAX_BYTES:
            raise _too_big(display(path), f"{st.st_size:,} bytes")
        chunks, size = [], 0
        while size <= MAX_BYTES:  # os.read, not a file object: planning reads 10,000 of them
            chunk = os.read(fd, MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise MappingError([f"{display(path)}: cannot be read ({e.strerror})"]) from None
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:  # grew after fstat
        raise _too_big(display(path), "more bytes")
    return data


def _too_big(shown: str, size: str) -> MappingError:
    return MappingError([f"{shown}: {size}, more than a mapping's {MAX_BYTES:,} bytes: "
                         f"is this the right file?"])


def parse_yaml(path: Path, data: bytes) -> Any:
    """A mapping file's YAML as Python values (not yet validated), within the bounds above."""
    shown = display(path)
    if len(data) > MAX_BYTES:
        raise _too_big(shown, f"{len(data):,} bytes")
    try:
        return yaml.load(data.decode("utf-8"), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        tab = tab_indented_line(data, line)
        if tab is not None:  # PyYAML's words ("cannot start any token") never say tab
            raise MappingError([f"{shown}:{tab}: a tab indents this line; YAML indents with "
                                f"spaces"]) from None
        raise MappingError([f"{shown} [line {line or '?'}] not valid YAML: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise MappingError([f"{shown}: not valid YAML: {' '.join(str(e).split())}"]) from None
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise MappingError([f"{shown} [line {line}] not UTF-8: save the file as UTF-8"]) from None
    except (ValueError, TypeError, RecursionError) as e:  # whatever else a hostile file finds
        raise MappingError([f"{shown}: not a mapping PyYAML can read ({type(e).__name__}: "
                            f"{short(' '.join(str(e).split()))})"]) from None


def tab_indented_line(data: bytes, upto: int | None) -> int | None:
    """The first non-blank line (1-based) at or before `upto` (the line a YAML error names;
    None: any) whose indentation holds a tab, else None."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines[:upto] if upto else lines, 1):
        body = line.lstrip(" \t")
        if body and "\t" in line[:len(line) - len(body)]:
            return number
    return None


def discover(folder: str | Path = "mappings") -> list[Path]:
    """Mapping files of a folder, sorted, so runs and DAGs see units in a stable order."""
    folder = Path(folder)
    # by text: the same order as by Path within one folder, without pathlib's costly comparisons
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")], key=str)


def raw_org_no(path: Path) -> str:
    """An invalid mapping's orgNo as written, when it looks like one (for its run record)."""
    try:  # within the same bounds as the mapping itself: the file may be hostile
        raw = parse_yaml(path, read_mapping_file(path))
        org = str(raw["unit"]["orgNo"]).strip().upper()
    except Exception:
        return ""
    return org if re.fullmatch(r"[0-9A-Z]{18}", org) else ""
