#!/usr/bin/env python3
"""The module graph of a Rust crate, read from its source, and the import circles in it.

Usage: scripts/modgraph.py SRC_DIR [--layers "a b,c d"] [--quiet] [--dot] [--edges]

Every file under SRC_DIR is a module (`a/mod.rs` and `a.rs` are module `a`, `lib.rs` and `main.rs`
the crate root). A module imports another when its code names a path into it: `use crate::x::..`,
`crate::x::Y` in an expression, `use super::..`, `super::super::..`, or a brace group of those.
Comments, string literals and unit tests (`#[cfg(test)] mod …`) are left out, as cargo-modules
leaves them out by default: a test may reach across the graph to set up what it tests.

Between a module and its own ancestors or descendants any edge is allowed (a folder's mod.rs
re-exports its children; a child uses its parent's types). Everywhere else, at every level of the
tree, the modules under one parent must form a graph without a circle: an edge from `a::x` to
`b::y` counts as an edge from `a` to `b` among the children of the root, and an edge from `a::x` to
`a::y` as one from `x` to `y` among the children of `a`.

With `--layers`, the top-level modules named are in layers, lowest first (space between layers,
commas within one): a module may import from its own layer's others or from layers below it, never
from one above, circle or not; a top-level module the list does not name is an error too, so a new
folder has to be given its place.

Exit status 1 with every circle (or import upward) printed (as a cycle of siblings and the imports behind each step)
when there is one; 0 with the dependency order of each level otherwise.
"""

import os
import re
import sys
from collections import defaultdict


def module_files(src):
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            # bin/ targets are crate roots of their own; tests/benches are not under src.
            if parts and parts[0] == "bin":
                continue
            mods[tuple(parts)] = os.path.join(root, f)
    return mods


def strip_comments_and_strings(text):
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and re.match(r"'\\[xu]", text[i:i + 3])):
            j = text.find("'", i + 2)
            i = j + 1
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(code):
    """Removes every `#[cfg(test)] mod name { ... }` block (braces balanced; comments and strings
    are already gone)."""
    out, i = [], 0
    pattern = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pattern.search(code, i)
        if not m:
            out.append(code[i:])
            return "".join(out)
        out.append(code[i:m.start()])
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += code[j] == "{"
            depth -= code[j] == "}"
            j += 1
        i = j


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0].strip()]
    prefix = tree[:brace]
    inner = tree[brace + 1:tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    paths = []
    for p in parts:
        if p.strip():
            for sub in expand_use_tree(p):
                paths.append(prefix + sub)
    return paths


PATH = re.compile(r"(?<![\w:])((?:crate|super|self)(?:::(?:super|\w+))*)(?:::\{)?")


def referenced_paths(code):
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use_tree(m.group(1)))
    # Paths in expressions and types, and the heads of brace groups outside `use`.
    without_uses = re.sub(r"\buse\s+[^;]+;", "", code)
    for m in PATH.finditer(without_uses):
        if m.group(0).endswith("{"):
            start = m.end() - 1
            depth, j = 0, start
            while j < len(without_uses):
                depth += without_uses[j] == "{"
                depth -= without_uses[j] == "}"
                if depth == 0:
                    break
                j += 1
            paths.extend(expand_use_tree(m.group(1) + "::" + without_uses[start:j + 1]))
        else:
            paths.append(m.group(1))
    return paths


def resolve(path, here, mods, is_folder):
    segs = [s for s in path.replace(" ", "").split("::") if s]
    if not segs:
        return None
    # The module whose file holds this code: `super` of a folder's mod.rs is the folder's parent.
    base = list(here)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    target = tuple(base)
    for s in segs:
        if target + (s,) in mods:
            target = target + (s,)
        else:
            break
    return target


def is_line(a, b):
    return a[:len(b)] == b or b[:len(a)] == a


def sibling_edges(edges):
    """Edges among the children of each parent: {parent: {(x, y): [(from, to), ...]}}."""
    levels = defaultdict(lambda: defaultdict(list))
    for (a, b) in edges:
        if is_line(a, b):
            continue
        k = 0
        while a[k] == b[k]:
            k += 1
        levels[a[:k]][(a[k], b[k])].append((a, b))
    return levels


def cycles(nodes, edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    graph = defaultdict(set)
    for (x, y) in edges:
        graph[x].add(y)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def layers(nodes, edges):
    """Nodes in dependency order, lowest first, grouped by depth (assumes no circle)."""
    deps = defaultdict(set)
    for (x, y) in edges:
        deps[x].add(y)
    depth = {}

    def d(v):
        if v not in depth:
            depth[v] = 0
            depth[v] = 1 + max((d(w) for w in deps[v]), default=-1)
        return depth[v]

    for v in nodes:
        d(v)
    by = defaultdict(list)
    for v, k in depth.items():
        by[k].append(v)
    return [sorted(by[k]) for k in sorted(by)]


def name(m):
    return "::".join(m) or "crate"


def main():
    argv = sys.argv[1:]
    if "--layers" in argv:
        i = argv.index("--layers")
        argv = argv[:i] + argv[i + 2:]
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1:
        sys.exit(__doc__)
    src = args[0]
    mods = module_files(src)
    edges = set()
    for mod, path in mods.items():
        code = strip_test_modules(strip_comments_and_strings(open(path, encoding="utf-8").read()))
        folder = os.path.basename(path) in ("mod.rs", "lib.rs", "main.rs")
        for p in referenced_paths(code):
            t = resolve(p, mod, mods, folder)
            if t is not None and t != mod:
                edges.add((mod, t))
    if "--edges" in sys.argv:
        for a, b in sorted(edges):
            print(f"{name(a)} -> {name(b)}")
    levels = sibling_edges(edges)
    bad = False
    children = defaultdict(set)
    for m in mods:
        if m:
            children[m[:-1]].add(m[-1])
    for parent in sorted(children, key=lambda p: (len(p), p)):
        sib = levels.get(parent, {})
        found = cycles(children[parent], sib.keys())
        for comp in found:
            bad = True
            members = set(comp)
            print(f"circle among the modules of {name(parent)}: {', '.join(comp)}")
            for (x, y), why in sorted(sib.items()):
                if x in members and y in members:
                    shown = ", ".join(f"{name(a)} -> {name(b)}" for a, b in sorted(why)[:3])
                    print(f"  {x} -> {y}   ({shown}{', ...' if len(why) > 3 else ''})")
        if not found and len(children[parent]) > 1 and "--quiet" not in sys.argv:
            order = layers(children[parent], sib.keys())
            print(f"{name(parent)}: " + " < ".join("{" + ", ".join(g) + "}" if len(g) > 1 else g[0] for g in order))
    if "--layers" in sys.argv:
        spec = sys.argv[sys.argv.index("--layers") + 1]
        rank = {m: i for i, layer in enumerate(spec.split()) for m in layer.split(",")}
        for m in sorted(children[()]):
            if m not in rank:
                bad = True
                print(f"module {m} has no layer: give it one in --layers ({spec})")
        for (x, y), why in sorted(levels.get((), {}).items()):
            if x in rank and y in rank and rank[y] > rank[x]:
                bad = True
                shown = ", ".join(f"{name(a)} -> {name(b)}" for a, b in sorted(why)[:3])
                print(f"import upward: {x} (layer {rank[x]}) -> {y} (layer {rank[y]})   ({shown})")
    if "--dot" in sys.argv:
        print("digraph modules {")
        for a, b in sorted(edges):
            print(f'  "{name(a)}" -> "{name(b)}";')
        print("}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
