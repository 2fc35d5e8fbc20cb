#!/usr/bin/env python3
"""The shape of the source, measured: the largest files, the longest functions and the
file-level import circles (`crate::`/`super::` paths resolved to files, unit-test modules
left out). `python3 scripts/shape.py [crate-src-dir ...]`; exits 1 when there is a circle.

Run from the repository root; by default it reads every crate's `src/` in the workspace."""
import os
import re
import sys


def rust_files(src):
    for dirpath, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith('.rs'):
                yield os.path.join(dirpath, f)


def module_path(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ('mod', 'lib', 'main'):
        rel = rel[:-1]
    return tuple(rel)


def without_tests(text):
    """Drops `#[cfg(test)] mod x { ... }` blocks (brace matched)."""
    out, i = [], 0
    for m in re.finditer(r'#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{', text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {'{': 1, '}': -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return ''.join(out)


def functions(path):
    """(lines, name) of every fn body in the file, tests included."""
    lines = open(path, encoding='utf-8').read().split('\n')
    out = []
    for n, line in enumerate(lines):
        m = re.match(r'\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)', line)
        if not m:
            continue
        depth, started = 0, False
        for k in range(n, len(lines)):
            code = re.sub(r'//.*', '', lines[k])
            code = re.sub(r'"(\\.|[^"\\])*"', '""', code)
            code = re.sub(r"'(\\.|[^'\\])'", "''", code)
            if not started and ';' in code and '{' not in code:
                break  # a declaration without a body
            depth += code.count('{') - code.count('}')
            started = started or '{' in code
            if started and depth <= 0:
                out.append((k - n + 1, m.group(6)))
                break
    return out


def imports(text, here, mods):
    found = set()
    text = re.sub(r'//[^\n]*', '', text)
    for m in re.finditer(r'\b(crate|super)((?:::\w+)+)', text):
        parts = m.group(2).strip(':').split('::')
        base = () if m.group(1) == 'crate' else here[:-1]
        path = base + tuple(parts)
        for k in range(len(path), 0, -1):
            if path[:k] in mods and path[:k] != here:
                found.add(path[:k])
                break
    for m in re.finditer(r'use\s+crate::\{([^;]*)\};', text, re.S):
        for item in re.split(r'[,{}\s]+', m.group(1)):
            head = tuple(x for x in item.split('::') if x)
            for k in range(len(head), 0, -1):
                if head[:k] in mods and head[:k] != here:
                    found.add(head[:k])
                    break
    return found


def circles(graph):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    srcs = sys.argv[1:] or [os.path.join(d, 'src') for d, _, f in os.walk('.')
                            if 'Cargo.toml' in f and os.path.isdir(os.path.join(d, 'src'))
                            and 'target' not in d.split(os.sep)]
    sizes, fns, found = [], [], []
    for src in sorted(srcs):
        files = list(rust_files(src))
        mods = {module_path(src, f): f for f in files}
        graph = {}
        for f in files:
            text = open(f, encoding='utf-8').read()
            sizes.append((text.count('\n'), f))
            fns += [(n, f'{f}::{name}') for n, name in functions(f)]
            graph[module_path(src, f)] = imports(without_tests(text), module_path(src, f), mods)
        found += [(src, c) for c in circles(graph)]
    print('largest files:')
    for n, f in sorted(sizes, reverse=True)[:5]:
        print(f'  {n:5} {f}')
    print('longest functions:')
    for n, f in sorted(fns, reverse=True)[:8]:
        print(f'  {n:5} {f}')
    print(f'import circles: {len(found)}')
    for src, c in found:
        print(f'  {src}: ' + ' <-> '.join('::'.join(m) or 'lib' for m in c))
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
