"""Every durable consumer a service starts has its work published again after NATS lost its
JetStream store (cinebridge_common.replay, docs/reliability.md "Work lost with the store"): each
consumed subject is covered by a `LostWork` rule that its own service passes to
`ctx.replay_lost`, or is exempt below with the reason.

The consumers are found where they are started: every `start_consumer(spec, model, handler)`
call in the services' and the common library's code, read from its module's own tables (the
`for ... in <TABLE>` around the call) or its spec constant, so that a new table row, a new
table or a new call without a rule fails here. The rules are found the same way, from each
`replay_lost(...)` call, so that a rule that is written but not wired does not count."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from cinebridge_common.replay import LostWork

ROOT = Path(__file__).resolve().parents[2]

#: (service, subject) → why no rule is needed. A dead letter and the messages published
#: straight to JetStream have no outbox row, so there is nothing to publish again.
EXEMPT: dict[tuple[str, str], str] = {
    ("common", "cb.dlq.>"): (
        "dead letters are published straight to the JetStream DLQ, never through the outbox; "
        "the message a lost letter was about is published again by its own subject's rule, "
        "since its work was not done"
    ),
    ("converter", "cb.dlq.CB_JOBS"): "a dead letter, as the common mirror's",
    ("sender", "cb.dlq.>"): "a dead letter, as the common mirror's",
    ("capture", "cb.evt.conversion.progressed"): (
        "published by the converter straight to JetStream, worth its moment only; the outcome "
        "events that follow it (instance created, conversion failed) have rules"
    ),
    ("sender", "cb.evt.commitment.reported"): (
        "published by the SCP straight to JetStream before it answers (PS3.4 J.3.3), not "
        "through the outbox; a lost report leaves its transaction requested, and the "
        "commitment sweep asks again in a new transaction once it is overdue"
    ),
}


@dataclass(frozen=True)
class Consumed:
    service: str
    subject: str
    #: None when the consumer's table does not name it (the spec is made from the subject).
    stream: str | None
    where: str


def _service(path: Path) -> str:
    package = next(p for p in path.relative_to(ROOT).parts if p.startswith("cinebridge_"))
    return package.removeprefix("cinebridge_")


def _module(path: Path) -> ModuleType:
    parts = path.relative_to(ROOT).parts
    dotted = parts[parts.index("src") + 1 :]
    return importlib.import_module(".".join(dotted).removesuffix(".py").removesuffix(".__init__"))


def _sources() -> Iterator[Path]:
    yield from sorted((ROOT / "services").glob("*/src/cinebridge_*/**/*.py"))
    yield from sorted((ROOT / "libs/common/src").glob("cinebridge_common/**/*.py"))


def _calls(tree: ast.AST, name: str) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
    """Every call of `<x>.name(...)` with its enclosing nodes, innermost first."""

    def walk(node: ast.AST, parents: list[ast.AST]) -> Iterator[tuple[ast.Call, list[ast.AST]]]:
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == name
        ):
            yield node, parents
        for child in ast.iter_child_nodes(node):
            yield from walk(child, [node, *parents])

    yield from walk(tree, [])


def _evaluate(node: ast.expr, module: ModuleType) -> Any:
    # The expression is the repository's own code (a table's or a spec's name), evaluated
    # where it is written.
    return eval(ast.unparse(node), vars(module))


def _from_table(call: ast.Call, parents: list[ast.AST], module: ModuleType) -> Iterator[Any]:
    """(model, stream or None) per row of the table the call's model comes from, if it does."""
    model = call.args[1] if len(call.args) > 1 else None
    if not isinstance(model, ast.Name):
        return
    for loop in parents:
        if not isinstance(loop, ast.For) or not isinstance(loop.target, ast.Tuple):
            continue
        names = [t.id if isinstance(t, ast.Name) else "" for t in loop.target.elts]
        if model.id not in names:
            continue
        at, stream_at = names.index(model.id), names.index("stream") if "stream" in names else None
        for row in _evaluate(loop.iter, module):
            yield row[at], row[stream_at] if stream_at is not None else None
        return


def consumers() -> list[Consumed]:
    found: list[Consumed] = []
    for path in _sources():
        text = path.read_text()
        if ".start_consumer(" not in text:
            continue
        module = _module(path)
        for call, parents in _calls(ast.parse(text), "start_consumer"):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            rows = list(_from_table(call, parents, module))
            if rows:
                found += [Consumed(_service(path), m.subject, s, where) for m, s in rows]
                continue
            spec = _evaluate(call.args[0], module)
            assert hasattr(spec, "filter_subject"), f"{where}: cannot tell what it consumes"
            found.append(Consumed(_service(path), spec.filter_subject, spec.stream, where))
    return found


def rules() -> dict[str, list[LostWork]]:
    wired: dict[str, list[LostWork]] = {}
    for path in _sources():
        text = path.read_text()
        if ".replay_lost(" not in text:
            continue
        module = _module(path)
        for call, _ in _calls(ast.parse(text), "replay_lost"):
            given = _evaluate(call.args[0], module)
            assert all(isinstance(rule, LostWork) for rule in given), path
            wired.setdefault(_service(path), []).extend(given)
    return wired


def test_the_scan_finds_the_consumers_and_rules_it_must() -> None:
    found = {(c.service, c.subject) for c in consumers()}
    assert {
        ("converter", "cb.job.converter.convert"),
        ("sender", "cb.evt.instance.created"),
        ("worklist", "cb.job.worklist.mpps"),
        ("gateway", "cb.evt.study.purged"),
        ("common", "cb.dlq.>"),
    } <= found
    assert {"converter", "sender", "capture", "worklist", "gateway"} <= set(rules())


def test_every_durable_consumer_has_its_lost_work_published_again() -> None:
    wired = rules()
    missing = []
    for c in consumers():
        if (c.service, c.subject) in EXEMPT:
            continue
        covering = [r for r in wired.get(c.service, []) if r.subject == c.subject]
        if not covering:
            missing.append(f"{c.where}: {c.service} consumes {c.subject} with no LostWork rule")
        elif c.stream is not None and all(r.stream != c.stream for r in covering):
            missing.append(f"{c.where}: {c.service}'s rule for {c.subject} names another stream")
    assert not missing, "\n".join(missing)


def test_every_rule_and_exemption_is_of_a_consumer() -> None:
    consumed = {(c.service, c.subject) for c in consumers()}
    stale = [key for key in EXEMPT if key not in consumed]
    assert not stale, f"exemptions of consumers that are gone: {stale}"
    orphans = [
        (service, rule.subject)
        for service, given in rules().items()
        for rule in given
        if (service, rule.subject) not in consumed
    ]
    assert not orphans, f"rules of subjects their service does not consume: {orphans}"
    assert not set(EXEMPT) & {
        (service, rule.subject) for service, given in rules().items() for rule in given
    }, "a subject both exempt and ruled"
