"""Display: the task state table (styled in JupyterLab, plain text in a headless log) and the
live task view, and the Apply button. Only this module knows about ipywidgets."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runbook_lib.blocks import Block, Diff, Heading, Sentence, Table, Tone
from runbook_lib.shows import Shows, to_html, to_text

if TYPE_CHECKING:
    import pandas as pd

#: How a task's status and health stand out in the task table (the renderer picks the colours).
STATUS_TONES: dict[str, Tone] = {
    "RUNNING": "ok",
    "STOPPED": "fail",
    "PROVISIONING": "info",
    "PENDING": "info",
    "ACTIVATING": "info",
    "DEACTIVATING": "warn",
    "STOPPING": "warn",
    "DEPROVISIONING": "warn",
}
HEALTH_TONES: dict[str, Tone] = {"HEALTHY": "ok", "UNHEALTHY": "fail"}
TASK_TONES = {"lastStatus": STATUS_TONES, "desiredStatus": STATUS_TONES, "health": HEALTH_TONES}
#: Prefix of the headless watch log lines (they vary with timing; see tests/nbval-sanitize.cfg).
WATCH_PREFIX = "[watch]"


def live_frontend() -> bool:
    """True inside a kernel that a Jupyter server started (a person is looking), unless
    ``RUNBOOK_HEADLESS=1``. papermill and nbval start kernels without a server: headless."""
    if os.environ.get("RUNBOOK_HEADLESS") == "1":
        return False
    if "ipykernel" not in sys.modules:
        return False
    return "JPY_SESSION_NAME" in os.environ or os.environ.get("RUNBOOK_LIVE") == "1"


def task_table(frame: pd.DataFrame) -> Table:
    """The task frame for people: ids shortened, states toned (times: the renderer's format)."""
    out = frame.copy()
    if "task" in out:
        out["task"] = out["task"].map(lambda t: str(t)[:12])
    return Table(out, TASK_TONES, empty="(no tasks)", name="tasks")


class TaskTable(Shows):
    """A task frame that shows itself: toned HTML in JupyterLab, plain text in a log."""

    def __init__(self, frame: pd.DataFrame, title: str = "") -> None:
        self.frame = frame
        self.title = title

    def blocks(self) -> list[Block]:
        head: list[Block] = [Heading(self.title)] if self.title else []
        return [*head, task_table(self.frame)]


class LiveView:
    """Where the watch step reports each change.

    In JupyterLab: an ipywidgets view (status line, progress bar, styled table) updated in place
    while the cell runs. Headless: one prefixed log line per change and the table, as text.
    """

    def __init__(self, title: str, timeout_s: float, live: bool | None = None) -> None:
        self.live = live_frontend() if live is None else live
        self.timeout_s = timeout_s
        self._box: Any = None
        if self.live:
            import ipywidgets as w
            from IPython.display import display

            self._status = w.HTML(value=to_html([Heading(f"{title}: starting")]))
            self._progress = w.FloatProgress(
                value=0.0, min=0.0, max=timeout_s, description="waiting", bar_style="info"
            )
            self._table = w.HTML(value="")
            self._box = w.VBox([self._status, self._progress, self._table])
            self._box.add_class("carts-live-view")
            display(self._box)
        else:
            print(f"{WATCH_PREFIX} {title}", flush=True)

    def update(
        self, elapsed_s: float, status: str, frame: pd.DataFrame | None, changed: bool
    ) -> None:
        if self.live:
            self._status.value = to_html([Heading(status)])
            self._progress.value = min(elapsed_s, self.timeout_s)
            self._progress.description = f"{elapsed_s:.0f} s"
            if frame is not None and changed:
                self._table.value = to_html([task_table(frame)])
            return
        if not changed:
            return
        print(f"{WATCH_PREFIX} +{elapsed_s:5.1f}s {status}", flush=True)
        if frame is not None:
            for line in to_text([task_table(frame)]).splitlines():
                print(f"{WATCH_PREFIX}   {line}", flush=True)

    def close(self, status: str, ok: bool) -> None:
        if self.live:
            self._status.value = to_html([Sentence(status, "ok" if ok else "fail")])
            if ok:  # a full green bar: done (the bar measures the wait against the timeout)
                self._progress.value = self._progress.max
            self._progress.bar_style = "success" if ok else "danger"
        else:
            print(f"{WATCH_PREFIX} {status}", flush=True)


def apply_button(
    name: str,
    tooltip: str,
    write: Callable[[], str],
    replan: Callable[[], tuple[str, bool]],
) -> Any:
    """The Apply button a live plan-only run offers.

    Pressing it calls ``write`` (the step's writes; it returns what to show, as HTML). When IAM
    changed since the plan (``PlanOutOfDate``) the button turns into "Re-plan", which calls
    ``replan`` (the new plan as HTML, and whether it has anything to write); Apply then applies
    that plan. Any other error is shown under the button (the run's record has it too).
    """
    import ipywidgets as w

    from runbook_lib.errors import PlanOutOfDate

    button = w.Button(
        description=f"Apply {name}",
        button_style="warning",
        tooltip=tooltip,
        layout=w.Layout(width="auto"),
    )
    out = w.HTML(value="<i>Nothing written yet. Press the button to attach the policy.</i>")
    mode = {"replan": False}

    def to_apply(pending: bool) -> None:
        mode["replan"] = False
        button.description, button.button_style = f"Apply {name}", "warning"
        button.disabled = not pending

    def on_click(_: Any) -> None:
        button.disabled = True
        try:
            if mode["replan"]:
                shown, pending = replan()
                out.value = shown + ("" if pending else to_html([Heading("Nothing to apply now.")]))
                to_apply(pending)
                return
            out.value = write()
            button.button_style = "success"
            button.description = f"Applied {name}"
        except PlanOutOfDate as exc:
            out.value = to_html([Sentence(str(exc), "warn"), Diff(exc.diff)])
            mode["replan"] = True
            button.description, button.button_style = "Re-plan", "info"
            button.disabled = False
        except Exception as exc:  # shown to the learner; the record has it too
            out.value = to_html([Sentence(str(exc), "fail")])
            button.disabled = False

    button.on_click(on_click)
    box = w.VBox([button, out])
    box.add_class("carts-apply")
    return box
