"""What every page of the web app is checked for: axe-core's serious and critical violations (vendored under
vendor/), overflow at a phone's width, console errors (test_pages.py, test_supporters.py)."""

from __future__ import annotations

import re
from pathlib import Path

from webui import UI

AXE_VERSION = "4.14.1"  # vendor/README.txt
AXE_SOURCE = (Path(__file__).with_name("vendor") / "axe.min.js").read_text()
# The WCAG 2.x A and AA rules and axe's best practices; a page fails on what axe rates serious or worse.
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
FAILING_IMPACTS = ("serious", "critical")
PHONE = (390, 844)


def axe_violations(driver) -> list[dict]:
    """Serious and critical violations on the page as it is now (Stripe's card element is Stripe's)."""
    if not driver.execute_script("return Boolean(window.axe)"):
        driver.execute_script(AXE_SOURCE)
        assert driver.execute_script("return axe.version") == AXE_VERSION
    found = driver.execute_async_script(
        """
        const [tags, done] = arguments;
        axe.run({ exclude: [['#card-element']] },
                { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] })
          .then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                                                        nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ')) }))),
                (e) => done([{ id: 'axe-error', impact: 'critical', help: String(e), nodes: [] }]));
    """,
        AXE_TAGS,
    )
    return [v for v in found if v["impact"] in FAILING_IMPACTS]


def overflow_at_phone_width(ui: UI) -> int:
    """How many pixels the page is wider than a 390 px phone's viewport (0: it fits)."""
    size = ui.driver.get_window_size()
    ui.driver.set_window_size(*PHONE)
    try:
        # uPlot resizes its charts on the next frames (ResizeObserver): measure after two.
        return ui.driver.execute_async_script("""
            const done = arguments[0];
            requestAnimationFrame(() => requestAnimationFrame(() =>
              done(document.documentElement.scrollWidth - window.innerWidth)));
        """)
    finally:
        ui.driver.set_window_size(size["width"], size["height"])


def shot_name(role: str, route: str) -> str:
    """A file name for the picture of a route as a role sees it: "finance-finance-kyc", "business-campaigns-<id>"."""
    return "-".join([role, *re.findall(r"[A-Za-z0-9_]+", route)])


def check_pages(ui: UI, role: str, routes: list[str]) -> list[str]:
    """What is wrong with each of ``routes`` as ``role`` sees it: axe violations, overflow, console errors. Each
    page is also saved as a screenshot under the test's ``shots/`` (the issue asks for one of each main page)."""
    problems = []
    for route in routes:
        ui.route(route)
        ui.shot(shot_name(role, route))
        name = f"{role} {route}"
        problems += [f"{name}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                     for v in axe_violations(ui.driver)]
        if (extra := overflow_at_phone_width(ui)) > 0:
            problems.append(f"{name}: {extra} px wider than a {PHONE[0]} px phone")
        problems += [f"{name}: console: {message}" for message in ui.console_errors()]
    return problems
