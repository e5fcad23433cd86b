"""The dependency rules of daemon/, read statically (ast; nothing is imported, no model needed).

The data path is one-way: sources -> pipeline stages -> fusion -> publish.  These rules keep the
rooms apart (docs/architecture.md):

- daemon/ never imports torch, export/, bench/ or the CLI package perceptd/ (the daemon runs on
  a device that carries none of them; what it shares with the CLI, UserError and the version,
  lives in daemon/ and the CLI imports it from there);
- control/ and health/ never import a stage, the sample logger or the composition root: control
  handlers and health readers reach them through Protocols (control/handlers.py,
  health/view.py), so the control thread has nothing of a stage to wait on;
- daemon/sources never imports daemon/pipeline (a source hands items on; it does not know stages);
- daemon/fusion never imports daemon/publish, daemon/sources or daemon/inference (fusion decides;
  inference runs the sessions, the fusion head's included; others deliver);
- fused events and samples flow one way: the fusion stage hands each event phase to an
  `EventSink` (fusion/fused.py) and the composition root puts the sample tap there, so
  daemon/pipeline never imports daemon/samples, and daemon/samples never imports
  daemon/pipeline, daemon/publish, daemon/inference or the composition root, not even for
  annotations (the evidence it reads is typed in fusion/fused.py);
- no import cycle between daemon subpackages, except the ones listed in ALLOWED_CYCLE_EDGES.

Imports under `if TYPE_CHECKING:` are annotations only and do not count, except where a rule
says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAEMON = REPO / "daemon"

# Subpackage edges that close a cycle today (issue 14), each a known exception to remove rather
# than copy.  Without them the subpackage graph is acyclic.  A new cycle fails the test; an entry
# that no longer closes a cycle fails it too, so the list only shrinks.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {
    # empty since the event vocabulary moved from config/events.py to events/config.py: the
    # config package (root.py assembles each room's section) is only ever imported downward
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_pkg: bool, annotations: bool = False
             ) -> list[tuple[str, int]]:
    """(imported module, line) for every runtime import in a module, relative ones resolved;
    with `annotations`, those under `if TYPE_CHECKING:` too."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test) and not annotations:
                for sub in child.orelse:
                    visit_stmt(sub)
                continue
            visit_stmt(child)

    def visit_stmt(child: ast.AST) -> None:
        if isinstance(child, ast.Import):
            out.extend((a.name, child.lineno) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                parts = module.split(".")
                base = parts[: len(parts) - child.level + (1 if is_pkg else 0)]
                name = ".".join(base + ([child.module] if child.module else []))
            else:
                name = child.module or ""
            out.append((name, child.lineno))
            out.extend((f"{name}.{a.name}", child.lineno) for a in child.names)  # from pkg import mod
        visit(child)

    visit(tree)
    return out


def _graph(annotations: bool = False) -> dict[str, list[tuple[str, int]]]:
    graph = {}
    for path in sorted(DAEMON.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        is_pkg = rel.name == "__init__"
        parts = rel.parts[:-1] if is_pkg else rel.parts
        module = "perceptd." + ".".join(parts)
        tree = ast.parse(path.read_text(), str(path))
        graph[str(path.relative_to(REPO))] = _imports(tree, module, is_pkg, annotations)
    return graph


GRAPH = _graph()
GRAPH_WITH_ANNOTATIONS = _graph(annotations=True)  # TYPE_CHECKING imports included


def _subpackage(module: str) -> str | None:
    """perceptd.daemon.fusion.head -> fusion; perceptd.daemon.app -> app (a top-level module)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["perceptd", "daemon"] else None


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(files: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = (),
                graph: dict[str, list[tuple[str, int]]] = GRAPH) -> list[str]:
    return [f"{f}:{line} imports {name}"
            for f, imports in graph.items() if f.startswith(files)
            for name, line in imports
            if _under(name, forbidden) and not _under(name, allowed)]


def test_the_graph_is_read() -> None:
    assert len(GRAPH) > 50
    assert any(name == "perceptd.daemon.pipeline.queues" for name, _ in GRAPH["daemon/app.py"])
    # the rules see a violation where there is one (a rule that reads nothing passes vacuously)
    assert _violations("daemon/pipeline/", ("perceptd.daemon.sources",))  # stages read Frame
    assert ("inference", "fusion") in _package_edges()  # inference/models.py compiles the events
    # annotations are read where a rule asks: health/view.py names the stages for basedpyright only
    assert not _violations("daemon/health/view.py", ("perceptd.daemon.pipeline",))
    assert _violations("daemon/health/view.py", ("perceptd.daemon.pipeline",),
                       graph=GRAPH_WITH_ANNOTATIONS)
    assert _cycle_edges({("a", "b"), ("b", "a"), ("b", "c")}) == {("a", "b"), ("b", "a")}


def test_daemon_never_imports_torch_export_bench_or_the_cli() -> None:
    assert _violations("daemon/", ("torch", "perceptd.export", "perceptd.bench")) == []
    cli = [f"{f}:{line} imports {name}" for f, imports in GRAPH.items() if f.startswith("daemon/")
           for name, line in imports
           if _under(name, ("perceptd",)) and not _under(name, ("perceptd.daemon",))]
    assert cli == [], "daemon/ imports the CLI package (perceptd/): move what it needs into daemon/"


def test_control_and_health_reach_stages_only_through_protocols() -> None:
    stages = ("perceptd.daemon.pipeline", "perceptd.daemon.samples", "perceptd.daemon.inference",
              "perceptd.daemon.sources", "perceptd.daemon.app")
    assert _violations("daemon/control/", stages) == []
    assert _violations("daemon/health/", stages) == []


def test_sources_never_import_pipeline() -> None:
    """A source hands items to a `sources.base.Sink` (the stage queue is one): it knows no stage."""
    assert _violations("daemon/sources/", ("perceptd.daemon.pipeline",)) == []


def test_fusion_never_imports_publish_sources_or_inference() -> None:
    assert _violations("daemon/fusion/", ("perceptd.daemon.publish", "perceptd.daemon.sources",
                                          "perceptd.daemon.inference")) == []


def test_fused_events_and_samples_flow_one_way() -> None:
    """Fusion puts each event phase into an `EventSink` and gets nothing back: the sample tap
    (samples/tap.py) stamps the sample id and hands the message on to the publish queue.  So the
    stages know nothing of samples/, and samples/ knows nothing of the stages, the wire or the
    sessions, not even for type annotations (fusion/fused.py types what it reads)."""
    assert _violations("daemon/pipeline/", ("perceptd.daemon.samples",),
                       graph=GRAPH_WITH_ANNOTATIONS) == []
    assert _violations("daemon/samples/", ("perceptd.daemon.pipeline", "perceptd.daemon.publish",
                                           "perceptd.daemon.inference", "perceptd.daemon.app"),
                       graph=GRAPH_WITH_ANNOTATIONS) == []


def _package_edges() -> dict[tuple[str, str], str]:
    """(from subpackage, to subpackage) -> one place that makes the edge."""
    edges: dict[tuple[str, str], str] = {}
    for f, imports in GRAPH.items():
        src = _subpackage("perceptd." + ".".join(Path(f).with_suffix("").parts))
        for name, line in imports:
            dst = _subpackage(name)
            if src and dst and src != dst and (DAEMON / dst).is_dir() and (DAEMON / src).is_dir():
                edges.setdefault((src, dst), f"{f}:{line}")
    return edges


def _cycle_edges(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges that lie on some cycle (both ends in one strongly connected component)."""
    nodes = {n for e in edges for n in e}
    reach = {n: {b for a, b in edges if a == n} for n in nodes}
    changed = True
    while changed:  # transitive closure: a few dozen nodes
        changed = False
        for n in nodes:
            more = set().union(*(reach[m] for m in reach[n])) - reach[n]
            if more:
                reach[n] |= more
                changed = True
    return {(a, b) for a, b in edges if a in reach[b]}


def test_no_import_cycles_between_daemon_subpackages() -> None:
    edges = _package_edges()
    allowed = set(ALLOWED_CYCLE_EDGES)
    unexpected = sorted(f"{a} -> {b} ({edges[(a, b)]})" for a, b in _cycle_edges(set(edges) - allowed))
    assert unexpected == [], "new import cycle between daemon subpackages"
    fixed = sorted(f"{a} -> {b}" for a, b in allowed - _cycle_edges(set(edges)))
    assert fixed == [], "no longer on a cycle: remove from ALLOWED_CYCLE_EDGES"
