"""The learner's path in JupyterLab, end to end in headless Chromium.

A throw-away JupyterLab server (the venv's ``python3`` kernel, settings of its own) serves a copy
of the runbook with ``apply = False``. The test runs the cells the way a learner does: everything
up to the apply cell, then that cell, presses the **Apply** button, then runs the rest; and it
checks what the page shows: the diagnosis, the live task view reaching RUNNING by itself, the
task table, the summary, and no error output anywhere.

Screenshots go to ``out/screenshots/`` (and ``failed-<test>.png`` there when a test fails).
Without ``/usr/bin/chromium`` the test is skipped, unless ``REQUIRE_BROWSER=1`` (CI).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import JupyterServer, chromium_page, failed, require_chromium

pytest_plugins = ["browser_support"]  # its hook tells the page fixture that a test failed

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "fix-iam-permissions.ipynb"
SHOTS = ROOT / "out" / "screenshots"
POLICY = "CartsDynamoPolicy"

pytestmark = pytest.mark.browser

#: What JupyterLab renders for an error output (and for text on stderr): the traceback, or the
#: runbook's one-line ``SomeError: sentence`` for known errors.
ERROR_TEXT = re.compile(r"Traceback|\b\w*(Error|Exception)\b")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- the notebook under test ----------------------------------------------------------------


def prepare_notebook(src: Path, dst: Path) -> dict[str, int]:
    """Copy ``src`` to ``dst`` with ``apply = False`` (papermill's injected-parameters cell) and
    no outputs, so everything the page shows comes from this run. Returns the index of each
    ``step:*`` tagged cell in the copy."""
    import nbformat
    import papermill

    papermill.execute_notebook(
        str(src),
        str(dst),
        parameters={"apply": False},
        prepare_only=True,
        kernel_name="python3",
        progress_bar=False,
        log_output=False,
    )
    nb = nbformat.read(dst, as_version=4)
    steps: dict[str, int] = {}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        for tag in cell.metadata.get("tags", []):
            if tag.startswith("step:"):
                steps[tag.removeprefix("step:")] = index
    nbformat.write(nb, dst)
    return steps


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()  # before anything else is prepared


@pytest.fixture
def notebook(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    path = folder / NOTEBOOK.name
    steps = prepare_notebook(NOTEBOOK, path)
    assert {"diagnose", "plan", "apply", "watch", "summary"} <= steps.keys(), steps
    return path, steps


@pytest.fixture
def jupyter(
    tmp_path: Path, notebook: tuple[Path, dict[str, int]], request: pytest.FixtureRequest
) -> Iterator[JupyterServer]:
    server = JupyterServer(root_dir=notebook[0].parent, home=tmp_path / "jupyter")
    spec = server.kernelspec("python3")
    argv0 = Path(spec.get("spec", {}).get("argv", ["?"])[0])
    assert argv0.parent == Path(sys.executable).parent, (
        f"the python3 kernel runs {argv0}, not this venv's python: install the venv's kernel with "
        f"`{sys.executable} -m ipykernel install --sys-prefix --name python3`"
    )

    def stop() -> None:
        leftovers = server.stop()
        assert not leftovers, f"processes left behind by the server were killed: {leftovers}"

    request.addfinalizer(stop)
    server.start()
    yield server


@pytest.fixture
def page(jupyter: JupyterServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import expect

    # Waits for a state, not timings: a loaded 2-core machine may take long to get there
    # (Playwright's own default for an assertion is 5 s).
    expect.set_options(timeout=60_000)
    with chromium_page() as pg:
        pg.set_default_timeout(60_000)
        yield pg
        if failed(request.node):
            pg.screenshot(path=str(SHOTS / f"failed-{request.node.name}.png"))
            print(f"--- jupyter server log (tail) ---\n{jupyter.log_tail()}")


# --- page helpers -----------------------------------------------------------------------------


def cell(pg: Any, index: int) -> Any:
    return pg.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)


def select_cell(pg: Any, index: int) -> None:
    """Click a cell's prompt: the cell becomes the active one, in command mode."""
    target = cell(pg, index)
    target.scroll_into_view_if_needed()
    target.locator(".jp-InputPrompt").first.click()
    pg.wait_for_function(
        "i => window.jupyterapp.shell.currentWidget.content.activeCellIndex === i", arg=index
    )


def screenshot(pg: Any, name: str, first: int, last: int) -> None:
    """Save what a learner sees of cells ``first`` to ``last``: the notebook (JupyterLab scrolls
    inside its own panel) scrolled so ``first`` is at the top, the page cut below ``last``."""
    cell(pg, first).evaluate("el => el.scrollIntoView({block: 'start'})")
    pg.wait_for_timeout(300)  # let the scroll and the layout settle
    box = cell(pg, last).bounding_box()
    view = pg.viewport_size
    bottom = view["height"] if box is None else min(view["height"], box["y"] + box["height"] + 8)
    clip = {"x": 0, "y": 0, "width": view["width"], "height": bottom}
    pg.screenshot(path=str(SHOTS / name), clip=clip)


def command(pg: Any, name: str) -> Any:
    """Run a JupyterLab command (a menu item) and wait for its promise, e.g. cells finishing."""
    return pg.evaluate("name => window.jupyterapp.commands.execute(name)", name)


def record_live_view(pg: Any, index: int) -> None:
    """Record, in the page, each status line the live view shows in cell ``index``; the view's
    node is marked when first seen, so a re-render or a reload would show as a lost mark."""
    pg.evaluate(
        """index => {
            const host = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')[index];
            const seen = (window.__cartsSeen = []);
            window.__cartsObserver = new MutationObserver(() => {
                const view = host.querySelector('.carts-live-view');
                if (!view) return;
                view.__cartsFirstSeen ??= seen.length;
                const status = view.firstElementChild ? view.firstElementChild.innerText : '';
                if (seen.at(-1) !== status) seen.push(status);
            });
            window.__cartsObserver.observe(host, {subtree: true, childList: true, characterData: true, attributes: true});
        }""",
        index,
    )


def error_outputs(pg: Any) -> list[str]:
    """Error outputs in the notebook model: the cell (index and tags) and its traceback."""
    found: list[dict[str, Any]] = pg.evaluate(
        """() => {
            const found = [];
            const cells = window.jupyterapp.shell.currentWidget.content.widgets;
            cells.forEach((c, index) => {
                if (c.model.type !== 'code') return;
                for (const o of c.model.outputs.toJSON()) {
                    if (o.output_type !== 'error') continue;
                    const tags = c.model.getMetadata('tags') || [];
                    found.push({index, tags, traceback: (o.traceback || []).join('\\n')});
                }
            });
            return found;
        }"""
    )
    return [f"cell {e['index']} {e['tags']}:\n{ANSI.sub('', e['traceback'])}" for e in found]


def problems(pg: Any) -> str:
    """What went wrong on the page, for an assertion message."""
    return "\n\n".join(error_outputs(pg) or stderr_texts(pg)) or "(no error output on the page)"


def stderr_texts(pg: Any) -> list[str]:
    """Text of every output that JupyterLab renders as stderr (streams and errors alike)."""
    nodes = pg.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
    return [str(t) for t in nodes.all_inner_texts()]


# --- the test ---------------------------------------------------------------------------------


def test_learner_applies_with_the_button_and_watches_carts_recover(
    jupyter: JupyterServer, notebook: tuple[Path, dict[str, int]], page: Any
) -> None:
    from playwright.sync_api import expect

    path, steps = notebook
    pg = page
    pg.goto(f"{jupyter.base_url}/lab/tree/{path.name}?token={jupyter.token}")
    cell(pg, steps["apply"]).wait_for()
    status_bar = pg.locator("#jp-main-statusbar")
    expect(status_bar).to_contain_text("| Idle")  # the kernel exists and waits
    pg.evaluate("() => { window.__cartsPage = true; }")  # gone if anything reloads the page
    if pg.evaluate("() => !window.jupyterapp.shell.leftCollapsed"):
        command(pg, "application:toggle-left-area")  # more room for the notebook

    # The server started the kernel from the venv's python3 spec, for this notebook.
    [session] = jupyter.sessions()
    assert session["path"] == path.name and session["kernel"]["name"] == "python3"

    # 1. Run > Run All Above Selected Cell, with the apply cell selected.
    select_cell(pg, steps["apply"])
    assert command(pg, "notebook:run-all-above") is True, problems(pg)
    diagnosis = cell(pg, steps["diagnose"]).locator(".jp-OutputArea")
    expect(diagnosis).to_contain_text("dynamodb:Query")
    expect(cell(pg, steps["plan"]).locator(".jp-OutputArea")).to_contain_text(POLICY)
    screenshot(pg, "01-diagnosis.png", steps["diagnose"] - 1, steps["diagnose"])

    # 2. Shift+Enter on the apply cell: apply is False in a live frontend, so a button.
    select_cell(pg, steps["apply"])
    pg.keyboard.press("Shift+Enter")
    apply_box = cell(pg, steps["apply"]).locator(".carts-apply")
    button = apply_box.get_by_role("button", name=f"Apply {POLICY}")
    expect(button).to_be_enabled()
    expect(apply_box).to_contain_text("Nothing written yet")
    expect(status_bar).to_contain_text("| Idle")
    button.click()
    expect(apply_box).to_contain_text(f"Wrote {POLICY} to retailStoreEcsTaskRole")
    done = apply_box.get_by_role("button", name=f"Applied {POLICY}")
    expect(done).to_be_disabled()
    screenshot(pg, "02-apply.png", steps["plan"] - 1, steps["apply"])

    # 3. Run > Run Selected Cell and All Below, from the cell after apply. Not awaited here: the
    #    live view must update in place while the watch cell runs.
    select_cell(pg, steps["apply"] + 1)
    record_live_view(pg, steps["watch"])
    pg.evaluate(
        "() => { window.__cartsRest = window.jupyterapp.commands.execute('notebook:run-all-below'); }"
    )
    live = cell(pg, steps["watch"]).locator(".carts-live-view")
    expect(live).to_be_visible(timeout=20_000)
    expect(live.locator(".widget-hprogress")).to_be_visible()
    expect(live).to_contain_text("RUNNING", timeout=30_000)
    expect(live.locator("table.carts-tasks")).to_be_visible()
    expect(live.locator("table.carts-tasks")).to_contain_text("RUNNING")
    assert pg.evaluate("() => window.__cartsRest") is True, problems(pg)
    # Updated in place: the view showing RUNNING is the node first rendered, on the same page.
    seen = pg.evaluate("() => window.__cartsSeen")
    assert seen and "RUNNING" in seen[-1], seen
    assert live.evaluate("el => el.__cartsFirstSeen !== undefined"), "the live view was re-rendered"
    assert pg.evaluate("() => window.__cartsPage === true"), "the page was reloaded"

    summary = cell(pg, steps["summary"]).locator(".jp-OutputArea")
    expect(summary).to_contain_text("fixed: carts is RUNNING")
    screenshot(pg, "03-watch-running.png", steps["watch"] - 1, steps["summary"])
    expect(status_bar).to_contain_text("| Idle")

    # No cell shows an error: none in the model, none rendered.
    assert error_outputs(pg) == []
    errors = [t for t in stderr_texts(pg) if ERROR_TEXT.search(t)]
    assert errors == [], errors
