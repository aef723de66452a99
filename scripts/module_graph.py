#!/usr/bin/env python3
"""Module graph of segdb: which top-level module uses which, and do the layers hold.

Usage: python3 scripts/module_graph.py [REPO_ROOT]     (default: the repo holding this script)
       python3 scripts/module_graph.py --self-test

It reads src/**/*.rs. A file's module is the first path component under src/ (src/segment/eval.rs
is `segment`, src/engine.rs is `engine`). Every `crate::X` path (in `use` lines, also grouped as
`use crate::{a::b, c}`, and inline) where X is a top-level module, or a name lib.rs re-exports from
one (`crate::Error` is `error`), counts as one reference. Comments and string literals are blanked
first, so doc text does not count. lib.rs and main.rs (and src/bin/) are crate roots, not modules,
and are left out; #[cfg(test)] code is counted. If crates/*/src exist (a Cargo workspace), each
crate is one unit, named by its directory, and `<crate_name>::` paths are the references.

It prints a table, the totals, the cycles (strongly connected components of more than one module)
and the upward arrows (a module using one in a higher layer of LAYERS). Exit status 1 if there is
a cycle, an upward arrow or a module missing from LAYERS; 0 otherwise.
"""
import io, os, re, sys, tempfile
from collections import Counter

# The layers of ARCHITECTURE.md ("Modules"), top to bottom. A module may use modules on its own
# line or below it. main.rs is the binary root and is not scanned, so it is not listed.
LAYERS = [
    ["cli", "config", "datagen"],   # main.rs's line (config.rs itself uses engine, ingest, ...)
    ["server", "http"],
    ["engine"],
    ["session"],
    ["cluster"],
    ["statement"],
    ["materialize", "collector"],
    ["segment"],
    ["ingest"],
    ["interests", "lookalike"],
    ["erasure", "links"],
    ["index"],
    ["storage"],
    ["functions"],
    ["privacy", "bitmap", "limits", "error", "result", "time", "logging", "taxonomy"],   # the leaves
]

IDENT = re.compile(r"[A-Za-z_]\w*")
RAW = re.compile(r'(?<!\w)[bc]?r(#*)"')   # start of a raw string, not the end of a word


def strip(text):
    """Blank out comments and string/char literals, keeping newlines so line counts still match."""
    out, i, n = [], 0, len(text)
    blank = lambda s: re.sub(r"[^\n]", " ", s)
    while i < n:
        c, two = text[i], text[i:i + 2]
        if two == "//":                                      # line comment
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif two == "/*":                                    # block comment (Rust's nest)
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j): depth, j = depth + 1, j + 2
                elif text.startswith("*/", j): depth, j = depth - 1, j + 2
                else: j += 1
        elif m := RAW.match(text, i):
            end = '"' + m.group(1)                           # raw string r"..", r#".."#, br#".."#
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
        elif c == '"':                                       # ordinary string with escapes
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        elif c == "'" and i + 1 < n and (text[i + 1] == "\\" or text[i + 2:i + 3] == "'"):
            j = text.find("'", i + 3 if text[i + 1] == "\\" else i + 2) + 1   # char literal
            j = n if j <= 0 else j
        else:                                                # code, or a lifetime like 'a
            out.append(c)
            i += 1
            continue
        out.append(blank(text[i:j]))
        i = j
    return "".join(out)


def first_segments(code, prefix):
    """For each path `prefix::X...` or `prefix::{a::.., b}` in code, yield X (or a, b)."""
    for m in re.finditer(r"(?<![\w:])" + prefix + r"\s*::\s*", code):
        j = m.end()
        if code[j:j + 1] != "{":
            name = IDENT.match(code, j)
            if name: yield name.group()
            continue
        depth, k, item = 0, j, ""                             # grouped: split at top-level commas
        while k < len(code):
            ch = code[k]
            depth += ch == "{"
            depth -= ch == "}"
            if depth == 0 or (depth == 1 and ch == ","):
                name = IDENT.match(item.strip())
                if name: yield name.group()
                item = ""
                if depth == 0: break
            elif not (depth == 1 and ch == "{"):
                item += ch
            k += 1


def read_rs(src, skip_roots):
    """{relative path: text} of the .rs files under src (without crate roots if skip_roots)."""
    files = {}
    for d, dirs, names in os.walk(src):
        dirs.sort()
        for f in sorted(names):
            rel = os.path.relpath(os.path.join(d, f), src).replace(os.sep, "/")
            if not f.endswith(".rs"): continue
            if skip_roots and (rel in ("lib.rs", "main.rs") or rel.startswith("bin/")): continue
            with open(os.path.join(d, f), encoding="utf-8") as fh:
                files[rel] = fh.read()
    return files


def package_name(cargo_toml):
    """The [package] name of a Cargo.toml, as code spells it (dashes become underscores)."""
    text = open(cargo_toml, encoding="utf-8").read() if os.path.exists(cargo_toml) else ""
    m = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1).replace("-", "_") if m else None


def scan(root):
    """Return ({unit: [files, lines]}, Counter of (from, to) references)."""
    crates = sorted(d for d in os.listdir(os.path.join(root, "crates"))
                    if os.path.isdir(os.path.join(root, "crates", d, "src"))) \
        if os.path.isdir(os.path.join(root, "crates")) else []
    size, edges = {}, Counter()
    if crates:   # workspace: one unit per crate; `<crate_name>::` paths between crates
        units = {d: os.path.join(root, "crates", d) for d in crates}
        names = {package_name(os.path.join(p, "Cargo.toml")) or d.replace("-", "_"): d
                 for d, p in units.items()}
        for unit, path in units.items():
            for rel, text in read_rs(os.path.join(path, "src"), skip_roots=False).items():
                add(size, unit, text)
                code = strip(text)
                for lib, target in names.items():
                    for _ in first_segments(code, lib):
                        if target != unit: edges[unit, target] += 1
        return size, edges
    src = os.path.join(root, "src")
    files = read_rs(src, skip_roots=True)
    modules = {rel.split("/")[0].removesuffix(".rs") for rel in files}
    # Names lib.rs re-exports (`pub use error::{Error, Result};`) resolve to their module.
    reexport = {}
    lib = os.path.join(src, "lib.rs")
    if os.path.exists(lib):
        for m in re.finditer(r"pub\s+use\s+(\w+)\s*::\s*(\{[^}]*\}|\w+)", strip(open(lib, encoding="utf-8").read())):
            for name in IDENT.findall(m.group(2)):
                reexport[name] = m.group(1)
    for rel, text in files.items():
        unit = rel.split("/")[0].removesuffix(".rs")
        add(size, unit, text)
        for name in first_segments(strip(text), "crate"):
            target = name if name in modules else reexport.get(name)
            if target and target != unit: edges[unit, target] += 1
    return size, edges


def add(size, unit, text):
    s = size.setdefault(unit, [0, 0])
    s[0] += 1
    s[1] += text.count("\n") + (0 if text.endswith("\n") or not text else 1)


def cycles(nodes, edges):
    """Tarjan's strongly connected components; those with more than one module, sorted."""
    succ = {v: sorted(b for (a, b) in edges if a == v) for v in nodes}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v); on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index: visit(v)
    return sorted(out)


def report(root, layers=LAYERS, out=sys.stdout):
    """Print the graph of the repo at root; return (exit status, cycles, upward arrows)."""
    size, edges = scan(root)
    layer = {m: i for i, line in enumerate(layers) for m in line}
    missing = sorted(set(size) - set(layer))
    order = sorted(size, key=lambda m: (layer.get(m, -1), m))
    print(f"{'module':<12} {'layer':>5} {'files':>5} {'lines':>6}  uses (references)", file=out)
    for m in order:
        uses = sorted(((b, c) for (a, b), c in edges.items() if a == m), key=lambda x: (-x[1], x[0]))
        print((f"{m:<12} {layer.get(m, '?'):>5} {size[m][0]:>5} {size[m][1]:>6}  "
               + ", ".join(f"{b} {c}" for b, c in uses)).rstrip(), file=out)
    print(f"files: {sum(s[0] for s in size.values())}, lines: {sum(s[1] for s in size.values())}, "
          f"modules: {len(size)}", file=out)
    cyc = cycles(size, edges)
    print("cycles: [" + ", ".join("[" + ", ".join(c) + "]" for c in cyc) + "]", file=out)
    up = sorted((a, b, c) for (a, b), c in edges.items()
                if a in layer and b in layer and layer[b] < layer[a])
    print("upward: [" + ", ".join(f"{a} -> {b} ({c})" for a, b, c in up) + "]", file=out)
    if missing:
        print("error: modules missing from LAYERS: " + ", ".join(missing), file=out)
    return (1 if cyc or up or missing else 0), cyc, up, missing


def self_test():
    """Build a tiny tree with a cycle (a <-> b), upward arrows and decoys, and check the report."""
    files = {
        "src/lib.rs": "pub mod a; pub mod b; pub mod c;\npub use c::Thing;\nuse crate::b::X;\n",
        "src/main.rs": "fn main() { segdb::a::run(); }\n",
        "src/a.rs": "use crate::{b::{X, Y}, c};\nfn f<'a>(s: &'a str) -> char { 'x' }\n",
        "src/b/mod.rs": "pub mod inner;\n/* crate::c /* nested */ crate::c */\n",
        "src/b/inner.rs": 'use crate::a;\n// crate::c\nconst S: &str = "crate::c \\" crate::c";\n'
                          'const R: &str = r#"crate::c " crate::c"#; const Q: char = \'"\';\n',
        "src/c.rs": "pub struct Thing;\n",
        "src/d.rs": "fn g() -> crate::Thing { crate::c::Thing }\n",
    }
    layers = [["d"], ["a"], ["b"], ["c"]]
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as fh: fh.write(text)
        status, cyc, up, missing = report(tmp, layers)
        ok = [status == 1, cyc == [["a", "b"]], up == [("b", "a", 1)], missing == []]
        # d uses c twice (one through lib.rs's re-export); b's comments and strings count for nothing.
        _, edges = scan(tmp)
        ok += [edges == Counter({("a", "b"): 1, ("a", "c"): 1, ("b", "a"): 1, ("d", "c"): 2})]
        # A module absent from the layers is an error on its own.
        status2, _, _, missing2 = report(tmp, [["a", "b", "c"]], out=io.StringIO())
        ok += [status2 == 1, missing2 == ["d"]]
        # Workspace: crates/x uses crate y (package "my-y") and y uses nothing.
        for rel, text in {"crates/x/src/lib.rs": "use my_y::Z; fn f() { my_y::g() }\n",
                          "crates/y/Cargo.toml": '[package]\nname = "my-y"\n',
                          "crates/y/src/lib.rs": "pub struct Z; pub fn g() {}\n"}.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as fh: fh.write(text)
        ok += [scan(tmp)[1] == Counter({("x", "y"): 2})]
    print("self-test:", "passed" if all(ok) else f"FAILED {ok}")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(report(root)[0])
