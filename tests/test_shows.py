"""Every result describes itself once, as blocks, and both renderings come from them.

Each subclass of :class:`~runbook_lib.shows.Shows` (found by walking the subclasses after every
module is imported, so a new result cannot escape) is built here the way the runbook builds it,
with a user-controlled string that holds HTML (``<i>x</i>``), and rendered both ways: the text
and the HTML say the same sentences and table cells, the HTML escapes that string, and no colour
is spelled outside the renderer.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ACCOUNT,
    CLUSTER,
    INDEX_ARN,
    REGION,
    ROLE,
    TABLE_ARN,
    carts_denial,
    carts_service,
    carts_task,
    carts_task_definition,
)

import runbook_lib
from runbook_lib import shows
from runbook_lib.blocks import Block, Diff, Heading, Items, Pre, Sentence, Table, fmt_cell, fmt_time
from runbook_lib.carts import carts_requests
from runbook_lib.diagnose import Diagnosis, Evidence, LogEvidence, decide, pick_failed_task
from runbook_lib.display import TaskTable
from runbook_lib.dynamo import ScanResult
from runbook_lib.ecs import ServiceState, TaskDefinition, tasks_frame
from runbook_lib.iam import RoleState, TrustCheck, check_trust
from runbook_lib.iam_eval import Explanation, explain
from runbook_lib.params import Params
from runbook_lib.plan import EarlierRun, Plan, Restore, RollbackResult, Unfinished, plan
from runbook_lib.policy import LintReport, RenderedPolicy, lint, render_policy
from runbook_lib.preflight import Preflight, SimulatorAnswer, preflight
from runbook_lib.runbook import Changed, Note, ParamsView, Summary
from runbook_lib.session import Identity
from runbook_lib.shows import Shows, to_html, to_text
from runbook_lib.watch import WatchResult
from runbook_lib.writes import DeploymentWrite, PolicyWrite

#: A string a user controls (a policy name, a log line, an event): HTML in it must show as text.
HOSTILE = "<i>x</i>"
ESCAPED = "&lt;i&gt;x&lt;/i&gt;"
NAME = f"Carts{HOSTILE}Policy"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": ["ecs-tasks.amazonaws.com", f"ec2{HOSTILE}.amazonaws.com"]},
            "Action": "sts:AssumeRole",
        }
    ],
}
DOC = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": TABLE_ARN}],
}


def role(inline: dict[str, Any] | None = None) -> RoleState:
    return RoleState(
        name=ROLE,
        arn=f"arn:aws:iam::{ACCOUNT}:role/{ROLE}",
        account=ACCOUNT,
        trust_policy=TRUST,
        inline={"Other": DOC, **(inline or {})},
        attached={},
    )


def rendered() -> RenderedPolicy:
    return dataclasses.replace(render_policy(Params(), ACCOUNT), name=NAME)


def service() -> ServiceState:
    events = [f"(service carts) has started 1 tasks: (task {HOSTILE}).", "steady? no"]
    return ServiceState.from_api(carts_service(events=events))


def diagnosis() -> Diagnosis:
    tasks = [carts_task(2), carts_task(1)]
    td = TaskDefinition.from_api(carts_task_definition())
    failed = pick_failed_task(tasks, {td.arn: td.container})
    denial = carts_denial(2)
    lines = (f"Starting carts {HOSTILE}", denial, "APPLICATION FAILED")
    log = LogEvidence("retail-store-ecs-tasks", "s", (denial,), lines)
    ev = Evidence(service(), td, tuple(tasks), {td.arn: td}, failed, log)
    d = Diagnosis.from_evidence(ev, decide(ev, ROLE), ROLE)
    return dataclasses.replace(d, warnings=[f"warned about {HOSTILE}"])


def task_table() -> TaskTable:
    stopped = carts_task(1, reason=f"Essential container {HOSTILE} exited")
    return TaskTable(tasks_frame([carts_task(2, "RUNNING", "HEALTHY"), stopped]), "Tasks:")


def watch_result() -> WatchResult:
    running = carts_task(3, "RUNNING", "HEALTHY")
    return WatchResult(
        "running",
        f"carts task {HOSTILE} is RUNNING and HEALTHY; the service runs 1 of 1.",
        task=running,
        tasks=[running, carts_task(2)],
        failed_after_change=[carts_task(2)],
    )


def policy_write() -> PolicyWrite:
    return PolicyWrite(ROLE, NAME, DOC, {**DOC, "Version": "2012-10-17"})


def deployment_write() -> DeploymentWrite:
    return DeploymentWrite(CLUSTER, f"carts{HOSTILE}", "ecs-svc/1234567890123456789")


def the_plan() -> Plan:
    svc = ServiceState.from_api(carts_service(rollout="FAILED"))
    restore = Restore("20261130-090000-1", None, [DOC], NAME)
    made = plan(role({NAME: DOC}), rendered(), svc, CLUSTER, restore)
    return dataclasses.replace(made, notes=[f"note on {HOSTILE}"])


def unfinished() -> Unfinished:
    write = PolicyWrite(ROLE, NAME, {**DOC, "Sid": HOSTILE}, DOC, state="sending")
    runs = (
        EarlierRun("20261130-100000-2", "interrupted", None, ()),
        EarlierRun("20261130-090000-1", "failed", "watch", (write.record(),)),
    )
    return Unfinished(ROLE, NAME, runs)


def rollback_result() -> RollbackResult:
    notes = (f"The new deployment of {HOSTILE} stays: ECS cannot undo it.",)
    return RollbackResult(ROLE, NAME, "refused", False, "the run", None, DOC, notes=notes)


def lint_report() -> LintReport:
    found = lint(rendered().document, Params(), ACCOUNT, {"Other": DOC})
    extra = dataclasses.replace(found.findings[0], message=f"statement {HOSTILE}")
    return LintReport((*found.findings, extra))


def scan_result() -> ScanResult:
    items = (
        {"id": "c1:i1", "customerId": "c1", "itemId": "i1", "quantity": 1, "unitPrice": 24},
        {"id": f"c2:{HOSTILE}", "customerId": "c2", "itemId": "i2", "quantity": 3, "unitPrice": 9},
    )
    return ScanResult("retail-store-ecs-carts", items, 2)


def explanation() -> Explanation:
    requests = [
        *carts_requests(REGION, ACCOUNT, "retail-store-ecs-carts", "i"),
        ("s3:Get", HOSTILE),
    ]
    return explain({"CartsDynamoPolicy": DOC}, requests)


def preflight_result() -> Preflight:
    params = Params()
    result = preflight(role(), rendered(), REGION, ACCOUNT, params.table, params.index)
    sim = [
        SimulatorAnswer("dynamodb:Query", INDEX_ARN, "allowed", True, None),
        SimulatorAnswer("dynamodb:GetItem", HOSTILE, "implicit_deny", False, True, ("aws:x",)),
    ]
    return dataclasses.replace(
        result, simulator=sim, boundary_arn=f"arn:aws:iam::{ACCOUNT}:policy/{HOSTILE}"
    )


def summary() -> Summary:
    pw = policy_write()
    dw = dataclasses.replace(deployment_write(), state="written")
    data = {
        "outcome": "fixed: carts is RUNNING",
        "caller": {"arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{HOSTILE}/p"},
        "steps": {
            "plan": {"policy_name": NAME, "role": ROLE, "action": "create"},
            "diagnose": {"cause": "task-role", "denied_action": "dynamodb:Query"},
            "watch": {"outcome": "running", "message": "carts is RUNNING"},
        },
        "iam_now": {"sentence": f"IAM holds {NAME} as this run left it."},
        "writes": [pw.record(), dw.record()],
        "earlier_runs": {"first_writer": "20261130-090000-1", "undo": "aws iam ..."},
        "undo": pw.undo,
    }
    return Summary(data, f"/somewhere/run-{HOSTILE.replace('/', '')}.record.json")


#: How each result is built: through the code that builds it in a run where that is pure.
FACTORIES: dict[type[Shows], Callable[[], Shows]] = {
    ServiceState: service,
    Diagnosis: diagnosis,
    TaskTable: task_table,
    WatchResult: watch_result,
    PolicyWrite: policy_write,
    DeploymentWrite: deployment_write,
    Plan: the_plan,
    Unfinished: unfinished,
    RollbackResult: rollback_result,
    TrustCheck: lambda: check_trust(role()),
    RenderedPolicy: rendered,
    LintReport: lint_report,
    ScanResult: scan_result,
    Explanation: explanation,
    Preflight: preflight_result,
    Note: lambda: Note(f"Rollback not requested for {HOSTILE}."),
    Changed: lambda: Changed(f"What apply would change in {HOSTILE}:", "--- a\n+++ b\n+<i>\n"),
    ParamsView: lambda: ParamsView(Params(profile=HOSTILE)),
    Summary: summary,
    Identity: lambda: Identity(ACCOUNT, f"arn:aws:sts::{ACCOUNT}:{HOSTILE}", "lab", "lab"),
}


def all_results() -> set[type[Shows]]:
    for mod in pkgutil.walk_packages(runbook_lib.__path__, "runbook_lib."):
        if not mod.name.endswith("__main__"):  # running it would run the command line
            importlib.import_module(mod.name)
    found: set[type[Shows]] = set()
    todo = list(Shows.__subclasses__())
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_result_has_a_factory_here() -> None:
    missing = {c.__qualname__ for c in all_results()} - {c.__qualname__ for c in FACTORIES}
    assert not missing, f"results without a factory in {__name__}: {sorted(missing)}"


class _Visible(HTMLParser):
    """The text a browser shows for some HTML (entities decoded), block elements on new lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.parts.append("\n" if tag in ("p", "pre", "tr", "li", "table") else " ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def visible(html: str) -> tuple[str, set[str]]:
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts), parser.tags


def pieces(blocks: list[Block] | tuple[Block, ...]) -> list[str]:
    """Every text the blocks carry: sentences, labels, headings, lines, table headers and cells."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Sentence):
            out += [b.text, b.label]
        elif isinstance(b, Heading):
            out.append(b.text)
        elif isinstance(b, Pre | Diff):
            out += b.text.splitlines()
        elif isinstance(b, Table):
            out += [str(c) for c in b.frame.columns] if not b.frame.empty else [b.empty]
            out += [fmt_cell(v) for row in b.frame.itertuples(index=False) for v in row]
        elif isinstance(b, Items):
            for entry in b.entries:
                out += pieces(entry)
    return [p for p in out if p.strip()]


def squash(text: str) -> str:
    return " ".join(text.split()).lower()


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


@pytest.mark.parametrize("cls", sorted(FACTORIES, key=lambda c: c.__qualname__), ids=str)
def test_text_and_html_say_the_same_from_the_same_blocks(cls: type[Shows]) -> None:
    result = FACTORIES[cls]()
    assert type(result) is cls
    # Nothing writes its content a second time: both renderings are the blocks'.
    assert cls.__str__ is Shows.__str__ and cls._repr_html_ is Shows._repr_html_
    blocks = result.blocks()
    text, html = str(result), result._repr_html_()
    assert text == to_text(blocks) and html == to_html(blocks)

    shown, tags = visible(html)
    assert "script" not in tags and "style" not in tags
    for piece in pieces(blocks):
        assert squash(piece) in squash(text), f"{cls.__name__}: {piece!r} missing from the text"
        assert squash(piece) in squash(shown), f"{cls.__name__}: {piece!r} missing from the HTML"
    # Not a word more on either side (the text numbers its lists; HTML's <ol> does that itself).
    assert words(shown) <= words(text)
    assert words(text) - words(shown) <= {str(n) for n in range(1, 10)}

    # The user's string is shown, never interpreted.
    assert HOSTILE in text, f"{cls.__name__}'s factory should carry the hostile string"
    assert ESCAPED in html and "<i>" not in html


def test_a_diff_and_toned_cells_are_coloured_by_the_renderer() -> None:
    html = to_html([Diff("--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n same")])
    assert f'<span style="color:{shows.TONE_COLOURS["fail"]}">-old</span>' in html
    assert f'<span style="color:{shows.TONE_COLOURS["ok"]}">+new</span>' in html
    assert "--- a\n+++ b" in html  # the headers are not additions or removals
    table = task_table().blocks()[-1]
    html = to_html([table])
    assert 'class="carts-table carts-tasks"' in html
    assert f'<td style="background-color:{shows.TONE_TINTS["ok"]}">RUNNING</td>' in html
    assert f'<td style="background-color:{shows.TONE_TINTS["fail"]}">STOPPED</td>' in html
    assert to_html([table]) == html  # the same every time: golden outputs depend on it


def test_text_layout() -> None:
    import pandas as pd

    frame = pd.DataFrame([("a", None), ("bbb", "2")], columns=["k", "value"])
    text = to_text(
        [
            Sentence("Intro."),
            Table(frame),
            Heading("Then:"),
            Items(((Sentence("one"), Pre("cmd\nmore")), (Sentence("two"),)), numbered=True),
            Sentence("it broke", "fail", "Diagnosis"),
            Sentence("look", "warn", "Warning"),
        ]
    )
    assert text.splitlines() == [
        "Intro.",
        "k    value",
        "---  -----",
        "a",
        "bbb  2",
        "",
        "Then:",
        "1. one",
        "   cmd",
        "   more",
        "2. two",
        "",
        "DIAGNOSIS: it broke",
        "WARNING: look",
    ]
    assert to_text([Table(frame.iloc[:0], empty="(no tasks)")]) == "(no tasks)"


def test_one_time_format_missing_times_are_blank() -> None:
    import pandas as pd

    at = datetime(2026, 11, 30, 9, 1, 32, tzinfo=UTC)
    assert fmt_time(at) == fmt_time(pd.Timestamp(at)) == "09:01:32"
    assert fmt_time(None) == fmt_time(pd.NaT) == fmt_time(float("nan")) == ""
    assert fmt_cell(pd.NA) == fmt_cell(pd.NaT) == fmt_cell(None) == ""
    assert fmt_cell(3) == "3" and fmt_cell(at) == "09:01:32"
    # A frame with a missing time (a task not started yet) shows a blank cell, not "NaT".
    pending = carts_task(4, "PENDING")
    text = str(TaskTable(tasks_frame([pending, carts_task(1)])))
    assert "NaT" not in text and "nan" not in text.lower().split()


COLOUR = re.compile(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b|\bcolou?r\s*:")


def test_no_colour_is_spelled_outside_the_renderer() -> None:
    root = Path(runbook_lib.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "shows.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if COLOUR.search(line)
    ]
    assert not found, "colours belong in runbook_lib/shows.py:\n" + "\n".join(found)
    assert COLOUR.search(Path(shows.__file__).read_text(encoding="utf-8"))  # the grep can match


def test_the_service_table_has_times_from_the_one_formatter() -> None:
    svc = ServiceState.from_api(carts_service(events=["one", "two"]))
    created = svc.events[0]["createdAt"]
    assert f"{fmt_time(created)}  one" in str(svc)
