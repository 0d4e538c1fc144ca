"""JupyterLab in a real headless Chromium, with `--gateway-url` at a real Kernelbus, used as a
person would: new notebook → Idle, execute, streaming output, `input()`, interrupt, restart, an
ipywidgets Image (binary buffers, through kernelbus_jupyter's relay), a kernel that crashes
(automatic restart), shutdown from the Running panel. Debian's chromium and chromium-driver
are installed by scripts/install-browser.sh when missing; a failing step leaves a screenshot
and the page source in $KERNELBUS_ARTIFACTS_DIR (default .artifacts/browser) for CI to keep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from kernelbus import natsserver
from kernelbus.processes import ServiceProcess, spawn, wait_for
from kernelbus.testing.plugin import ApiProcess, Services

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(360)]

ROOT = Path(__file__).resolve().parents[2]
LAB_TOKEN = "lab-token"
RELAY = "kernelbus_jupyter.BinaryGatewayWebSocketConnection"
STEP_TIMEOUT = 60  # seconds any one UI step may take before it fails with a screenshot
T = TypeVar("T")

if sys.platform != "linux":  # pragma: no cover - CI is Linux; Debian's packages are Linux's
    pytest.skip("the browser test uses Debian's chromium (Linux only)", allow_module_level=True)


def _artifacts_dir() -> Path:
    return Path(os.environ.get("KERNELBUS_ARTIFACTS_DIR", ROOT / ".artifacts" / "browser"))


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """The system chromium and chromedriver, installed with apt-get when missing."""
    script = ROOT / "scripts" / "install-browser.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chromium could not be installed with apt-get: {done.stderr.strip()[-500:]}")
    return "/usr/bin/chromium", "/usr/bin/chromedriver"


@dataclass
class Lab:
    url: str
    api: ApiProcess
    server: ServiceProcess


def _lab_ok(url: str) -> bool:
    try:
        response = httpx.get(f"{url}/api/status", params={"token": LAB_TOKEN}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@pytest.fixture
def lab(services: Services, tmp_path: Path) -> Lab:
    """A worker, an api, and `jupyter lab --gateway-url` at it with kernelbus_jupyter's relay."""
    services.worker()
    api = services.api(token="lab-gateway-token")
    port = natsserver.free_port()
    root = tmp_path / "notebooks"
    root.mkdir()
    command = [
        str(Path(sys.executable).parent / "jupyter-lab"),
        f"--GatewayClient.url={api.url}",
        f"--ServerApp.kernel_websocket_connection_class={RELAY}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={LAB_TOKEN}",
        "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=",  # no fetches to the internet
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    env = {"JUPYTER_GATEWAY_AUTH_TOKEN": api.token}
    server = spawn("jupyter-lab", command, env, tmp_path / "logs")
    services.started.append(server)  # stopped by pid with the rest
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _lab_ok(url), 90, "jupyter lab", server)
    return Lab(url, api, server)


@pytest.fixture
def browser(chromium: tuple[str, str], tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = Options()
    options.binary_location = binary
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser on JupyterLab, with waits that fail with a screenshot of the page."""

    def __init__(self, driver: Any, lab: Lab, name: str) -> None:
        self.driver = driver
        self.lab = lab
        self.name = name
        self.step = "start"

    def save_artifacts(self) -> Path:
        out = _artifacts_dir() / self.name
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{int(time.time())}-{self.step.replace(' ', '_')}"
        self.driver.save_screenshot(str(out / f"{stem}.png"))
        (out / f"{stem}.html").write_text(self.driver.page_source)
        (out / f"{stem}-jupyter-lab.log").write_text(self.lab.server.log()[-20000:])
        (out / f"{stem}-api.log").write_text(self.lab.api.service.log()[-20000:])
        return out

    def until(self, what: str, check: Callable[[], T | None], timeout: float = STEP_TIMEOUT) -> T:
        """Poll `check` until it returns something truthy (60 s at most)."""
        from selenium.common.exceptions import WebDriverException

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
            except WebDriverException:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.step}: {what} (artifacts: {self.save_artifacts()})")
            time.sleep(0.1)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.until(
            f"{css} on the page", lambda: _displayed(self.driver, By.CSS_SELECTOR, css)
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # --- notebook helpers ----------------------------------------------------------------

    def kernel_status(self) -> str:
        status = self.js(
            "const e = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-Notebook-ExecutionIndicator'); return e ? e.getAttribute('data-status') : '';"
        )
        return str(status or "")

    def wait_status(self, *states: str) -> str:
        return self.until(
            f"kernel status in {states} (now {self.kernel_status()!r})",
            lambda: (s := self.kernel_status()) in states and s,
        )

    def run_cell(self, code: str) -> None:
        """Type `code` into the last cell and run it with Shift+Enter (a new cell follows)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        editor = self.until(
            "an editable last cell",
            lambda: self.js(
                "const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
                ".jp-Notebook .jp-Cell'); const c = cells[cells.length - 1];"
                "return c ? c.querySelector('.cm-content') : null;"
            ),
        )
        editor.click()
        self.js(
            "const view = arguments[0].cmView ? arguments[0].cmView.view : null;"
            "if (view) { view.dispatch({changes: {from: 0, to: view.state.doc.length, "
            "insert: arguments[1]}}); return true; } return false;",
            editor,
            code,
        ) or editor.send_keys(code)
        ActionChains(self.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(
            Keys.SHIFT
        ).perform()

    def output_of(self, index: int) -> str:
        text = self.js(
            "const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-Notebook .jp-CodeCell'); const c = cells[arguments[0]];"
            "return c ? c.querySelector('.jp-OutputArea').innerText : '';",
            index,
        )
        return str(text or "")

    def command_mode_keys(self, *keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        chain = ActionChains(self.driver).send_keys(Keys.ESCAPE)
        for key in keys:
            chain = chain.send_keys(key)
        chain.perform()


def _displayed(driver: Any, by: str, css: str) -> Any:
    for element in driver.find_elements(by, css):
        if element.is_displayed():
            return element
    return None


def _kernelbus_kernels(api: ApiProcess) -> list[dict[str, Any]]:
    response = httpx.get(f"{api.url}/api/kernels", headers=api.headers, timeout=10)
    assert response.status_code == 200, response.text
    kernels: list[dict[str, Any]] = response.json()
    return kernels


# A 2x2 PNG: its bytes are not valid UTF-8, so the stock relay would die on the widget.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJ"
    "RU5ErkJggg=="
)


def test_a_notebook_session_in_jupyterlab_through_kernelbus(
    lab: Lab, browser: Any, tmp_path: Path
) -> None:
    page = Page(browser, lab, "notebook-session")
    gate = tmp_path / "gate"

    page.step = "new notebook"
    browser.get(f"{lab.url}/lab?token={LAB_TOKEN}")
    page.find('.jp-LauncherCard[data-category="Notebook"]').click()
    # The kernel runs in Kernelbus, and the page shows it Idle.
    page.until("a kernel in Kernelbus", lambda: len(_kernelbus_kernels(lab.api)) == 1)
    page.wait_status("idle")

    page.step = "execute"
    page.run_cell("print(6 * 7)")
    page.until("the printed result", lambda: "42" in page.output_of(0))

    page.step = "streaming"
    page.run_cell(
        "import os, time\nprint('tick 0', flush=True)\n"
        f"while not os.path.exists({str(gate)!r}): time.sleep(0.05)\nprint('tick 1')"
    )
    # The first line is on the page while the cell still runs (it waits for the gate).
    page.until("the first streamed line", lambda: "tick 0" in page.output_of(1))
    assert "tick 1" not in page.output_of(1) and page.kernel_status() == "busy"
    gate.touch()
    page.until("the second streamed line", lambda: "tick 1" in page.output_of(1))

    page.step = "stdin"
    page.run_cell("name = input('name? ')\nprint('hello', name)")
    from selenium.webdriver.common.keys import Keys

    page.find(".jp-Stdin-input").send_keys("kernelbus" + Keys.ENTER)
    page.until("the answer used", lambda: "hello kernelbus" in page.output_of(2))
    page.wait_status("idle")

    page.step = "interrupt"
    page.run_cell("import time\nstate = 'kept'\ntime.sleep(600)")
    page.wait_status("busy")
    page.command_mode_keys("i", "i")
    page.until("KeyboardInterrupt", lambda: "KeyboardInterrupt" in page.output_of(3))
    page.wait_status("idle")

    page.step = "restart"
    page.command_mode_keys("0", "0")
    page.find(".jp-Dialog-button.jp-mod-accept").click()
    page.until("the restart to begin", lambda: page.kernel_status() != "idle", timeout=20)
    page.wait_status("idle")
    page.run_cell("print('state' in globals())")
    page.until("a fresh namespace", lambda: "False" in page.output_of(4))

    page.step = "binary widget"
    page.run_cell(
        "import base64, ipywidgets\n"
        f"png = base64.b64decode({PNG!r})\n"
        "image = ipywidgets.Image(value=png, format='png', width=40, height=40)\n"
        "print('before the widget', flush=True)\n"
        "display(image)\n"
        "print('after the widget')"
    )
    page.until(
        "the widget's image from its binary buffer",
        lambda: page.js(
            "const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) "
            ".jp-Notebook .jp-CodeCell'); const img = cells[5] && cells[5].querySelector("
            "'.jp-OutputArea img'); return img && img.complete && img.naturalWidth === 2;"
        ),
    )
    page.until("the output around the widget", lambda: "after the widget" in page.output_of(5))
    page.run_cell("print('still', 'alive')")
    page.until("a later cell", lambda: "still alive" in page.output_of(6))

    page.step = "a kernel that crashes"
    page.run_cell("print('going down', flush=True)\nimport os, time\ntime.sleep(0.3)\nos._exit(1)")
    # JupyterLab announces the automatic restart Kernelbus performs ("Kernel Restarting").
    dialog = page.find(".jp-Dialog-content")
    assert "restart" in dialog.text.lower(), dialog.text
    page.find(".jp-Dialog-button.jp-mod-accept").click()
    page.until("the crashed cell's output", lambda: "going down" in page.output_of(7))
    page.wait_status("idle")
    page.run_cell("print('back', 'again')")
    page.until("a cell after the crash", lambda: "back again" in page.output_of(8))

    page.step = "shutdown from the Running panel"
    page.find('.jp-SideBar [data-id="jp-running-sessions"]').click()
    kernel_item = page.find(".jp-RunningSessions-item.jp-mod-kernel")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    ActionChains(browser).move_to_element(kernel_item).perform()  # the button shows on hover
    shutdown = kernel_item.find_element(By.CSS_SELECTOR, ".jp-RunningSessions-itemShutdown")
    page.until("the kernel's Shut Down button", shutdown.is_displayed)
    shutdown.click()
    page.until("no kernel left in Kernelbus", lambda: not _kernelbus_kernels(lab.api))
    page.until("the notebook without a kernel", lambda: page.kernel_status() != "idle")
