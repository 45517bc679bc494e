#!/usr/bin/env python3
"""File-level import circles in src/: each file's `crate::…` and `super::…` paths (outside
comments and its test module) resolved to the file that defines the module, then the
strongly connected components of that graph with more than one file. Prints each circle and,
with -v, every edge inside it; exits 1 when there is one.

Usage: scripts/import_cycles.py [-v]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def main():
    files = {}
    for d, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[os.path.relpath(p, ROOT)] = open(p).read()
    by_module = {tuple(module_of(r)): r for r in files}

    def resolve(parts):
        if parts == ["Error"]:  # the crate root re-exports error::Error
            return "error.rs"
        for k in range(len(parts), 0, -1):
            if tuple(parts[:k]) in by_module:
                return by_module[tuple(parts[:k])]
        return None

    edges = {r: set() for r in files}
    for rel, src in files.items():
        if rel == "contract/pb.rs":  # generated; its `super::` are its own nested modules
            continue
        src = src.split("#[cfg(test)]")[0]
        src = "\n".join(line.split("//")[0] for line in src.split("\n"))
        here = module_of(rel)
        # A folder's mod.rs is its module; a plain file's children live in its folder.
        parent = here[:-1]
        for m in re.finditer(r"\b(crate|super)((?:::(?:\w+|\*))+)", src):
            path = [p for p in m.group(2).strip(":").split("::") if p != "*"]
            parts = path if m.group(1) == "crate" else parent + path
            while "super" in parts:
                i = parts.index("super")
                parts = parts[: i - 1] + parts[i + 1 :]
            target = resolve(parts)
            if target and target != rel:
                edges[rel].add(target)
        # `use child::…` in a module that declares `mod child;`.
        children = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod (\w+);", src, re.M))
        for m in re.finditer(r"\buse (\w+)::", src):
            if m.group(1) in children:
                target = resolve(here + [m.group(1)])
                if target and target != rel:
                    edges[rel].add(target)

    index, low, stack, on, circles, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
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
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    for c in circles:
        print(f"circle of {len(c)} files: {' '.join(c)}")
        if "-v" in sys.argv:
            for a in c:
                print(f"  {a} -> {' '.join(sorted(e for e in edges[a] if e in c))}")
    if not circles:
        print("no file-level import circle in src/")
    return 1 if circles else 0


if __name__ == "__main__":
    sys.exit(main())
