#!/usr/bin/env python3
"""Loads the dashboard page in headless Chromium (Debian's package) and checks what a person would see.

Usage: [CHECK_SERVING_KEY=cwa_...] browser_check.py BASE_URL SCREENSHOT_DIR

With CHECK_SERVING_KEY the service requires a credential: the browser logs in with HTTP Basic (any user name,
the key as the password), as a person does in the browser's login prompt; without it, the page must answer 401.

Two passes, each with a fresh profile directory and the flags these machines need:
1. `chromium --headless --dump-dom`: the page as the browser rendered it (Chromium exits 0 even for an error
   page, so the DOM itself is checked).
2. Playwright driving the same binary, at a laptop and at a phone viewport: fails on any console error, page
   error, failed request, HTTP error or request to another origin; checks the figures against the JSON reports
   (totals, the chart's bars and y-axis, the weekday x hour heatmap against /api/reports/occupancy, the week and
   month views in another zone, reached by clicking the page's own links, against daily_usage with the same
   granularity and tz) and the operator panel; checks that nothing overflows the phone's width; saves one
   screenshot per viewport.
Exits non-zero with every problem listed.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

problems = []
KEY = os.environ.get("CHECK_SERVING_KEY")


def check(ok, what):
    if not ok:
        problems.append(what)
    return ok


def get_json(url):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {KEY}"} if KEY else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def expected_figures(base):
    daily = get_json(base + "/api/reports/daily_usage")
    visits = get_json(base + "/api/reports/user_visits")
    days = sorted(daily)
    # The chart covers every calendar day from the first to the last with data, at most the last 366.
    if days:
        import datetime as dt
        first, last = (dt.date.fromisoformat(d) for d in (days[0], days[-1]))
        span = min((last - first).days + 1, 366)
    else:
        span = 0
    return {
        "checkins": f"{sum(daily.values()):,}",
        "tokens": f"{sum(v['visits'] for v in visits.values()):,}",
        "members": f"{len(visits):,}",
        "days": f"{len(daily):,}",
        "bars": span,
    }


WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def check_heatmap(page, base, name, query=""):
    """Every cell of the heatmap shows the occupancy report's count for its weekday and hour."""
    grid = get_json(base + "/api/reports/occupancy" + query)
    cells = page.evaluate("""() => [...document.querySelectorAll('#heatmap rect')].map(r => [
        r.dataset.day, +r.dataset.hour, +r.dataset.n, r.querySelector('title').textContent])""")
    check(len(cells) == 168, f"{name}: heatmap has {len(cells)} cells, expected 168")
    for day, hour, n, title in cells:
        if not check(grid[day][hour] == n, f"{name}: heatmap {day} {hour}h shows {n}, occupancy says {grid[day][hour]}"):
            break
        check(title.startswith(day) and title.endswith(f": {n} check-ins"), f"{name}: heatmap title {title!r}")


def check_bars(page, base, name, query):
    """The chart's bars are the daily-usage report for the same view, missing periods as zero, and the y axis
    is labelled from 0 to a top no lower than the tallest bar."""
    report = get_json(base + "/api/reports/daily_usage?" + query)
    bars = page.evaluate("""() => [...document.querySelectorAll('#daily-chart rect')].map(r =>
        [r.dataset.period, +r.dataset.n])""")
    shown = {p: n for p, n in bars if n}
    check(shown == {k: v for k, v in report.items() if k in {p for p, _ in bars}} and set(shown) <= set(report),
          f"{name} ({query}): bars differ from daily_usage")
    check(bars and bars[-1][0] == max(report), f"{name} ({query}): the last bar is not the newest period")
    ticks = page.evaluate("() => [...document.querySelectorAll('.yaxis span')].map(s => s.textContent)")
    top = int(ticks[-1].replace(",", "")) if ticks else -1
    check(len(ticks) == 5 and ticks[0] == "0" and top >= max(n for _, n in bars),
          f"{name} ({query}): y-axis ticks {ticks}")


def dump_dom_pass(base, want):
    with tempfile.TemporaryDirectory() as profile:
        url = base.replace("http://", f"http://check-serving:{KEY}@") if KEY else base
        out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url + "/"],
                             capture_output=True, text=True, timeout=120)
    dom = out.stdout
    if not check(out.returncode == 0 and "<html" in dom, f"dump-dom: chromium exit {out.returncode}, "
                 f"stderr: {out.stderr[-500:]}"):
        return
    check("Coworking usage" in dom and 'id="daily-chart"' in dom, "dump-dom: the dashboard did not render")
    chart = dom[dom.find('id="daily-chart"'):]
    chart = chart[:chart.find("</svg>")]
    check(chart.count("<rect") == want["bars"], f"dump-dom: {chart.count('<rect')} bars, expected {want['bars']}")
    check(dom.count("<rect") == want["bars"] + 168, "dump-dom: the heatmap does not have 168 cells")
    for key in ("checkins", "tokens", "members", "days"):
        m = re.search(rf'data-figure="{key}">([^<]*)<', dom)
        check(m and m.group(1) == want[key], f"dump-dom: {key} shows {m and m.group(1)!r}, expected {want[key]!r}")


def playwright_pass(base, want, shots):
    from playwright.sync_api import sync_playwright
    viewports = {
        "laptop": dict(viewport={"width": 1366, "height": 900}),
        "phone": dict(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                      has_touch=True),
    }
    with sync_playwright() as p:
        for name, options in viewports.items():
            with tempfile.TemporaryDirectory() as profile:
                login = {"http_credentials": {"username": "check-serving", "password": KEY}} if KEY else {}
                ctx = p.chromium.launch_persistent_context(
                    profile, executable_path=CHROMIUM, headless=True, args=FLAGS[1:], **options, **login)
                page = ctx.new_page()
                seen = []
                page.on("console", lambda m: m.type in ("error", "warning") and seen.append(f"console {m.type}: {m.text}"))
                page.on("pageerror", lambda e: seen.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: seen.append(f"request failed: {r.url} ({r.failure})"))
                page.on("request", lambda r: r.url.startswith(base) or r.url.startswith("data:")
                        or seen.append(f"request to another origin: {r.url}"))
                # The login prompt's challenge (a 401 answered with the credential) is expected once per page.
                page.on("response", lambda r: r.status >= 400 and not (KEY and r.status == 401)
                        and seen.append(f"HTTP {r.status}: {r.url}"))
                resp = page.goto(base + "/", wait_until="load")
                check(resp is not None and resp.status == 200, f"{name}: status {resp and resp.status}")
                page.wait_for_timeout(300)
                bars = page.locator("#daily-chart rect").count()
                check(bars == want["bars"], f"{name}: {bars} bars, expected {want['bars']}")
                for key in ("checkins", "tokens", "members", "days"):
                    text = page.locator(f'[data-figure="{key}"]').inner_text()
                    check(text == want[key], f"{name}: {key} shows {text!r}, expected {want[key]!r}")
                check(page.locator("#weekdays tr").count() == 7, f"{name}: weekdays table is not 7 rows")
                check(page.locator("#visits tr").count() == 7, f"{name}: visits table is not 7 rows")
                check("Data computed at" in page.locator("#computed-at").inner_text(), f"{name}: no computed-at")
                check_bars(page, base, name, "")
                check_heatmap(page, base, name)
                runs = page.locator("#runs tbody tr").count()
                age = page.locator("#data-age").get_attribute("data-seconds")
                check(runs >= 1 and age is not None and int(age) >= 0, f"{name}: operator panel: {runs} runs, age {age}")
                layout = page.evaluate("""() => ({
                    scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                    chart: document.querySelector('#daily .chart').getBoundingClientRect().width,
                    font: parseFloat(getComputedStyle(document.body).fontSize)})""")
                check(layout["scroll"] <= layout["inner"], f"{name}: page is wider than the screen: {layout}")
                check(layout["chart"] >= 0.8 * layout["inner"] - 64, f"{name}: chart is narrow: {layout}")
                check(layout["font"] >= 14, f"{name}: body text under 14px: {layout}")
                path = f"{shots}/dashboard-{name}.png"
                page.screenshot(path=path, full_page=True)
                print(f"  {name}: {bars} bars, layout {layout}, screenshot {path}")
                # The page's own links switch the view: a zone, then weeks, then months.
                zone = "America/New_York"
                page.click(f'nav a[href="/?tz={zone}"]')
                page.wait_for_load_state("load")
                check_heatmap(page, base, f"{name} {zone}", f"?tz={zone}")
                for g in ("week", "month"):
                    page.click(f'nav a[href="/?granularity={g}&tz={zone}"]')
                    page.wait_for_load_state("load")
                    check(page.locator("#daily").get_attribute("data-granularity") == g, f"{name}: not the {g} view")
                    check_bars(page, base, name, f"granularity={g}&tz={zone}")
                if name == "laptop":
                    page.screenshot(path=f"{shots}/dashboard-{name}-month.png", full_page=True)
                for s in seen:
                    problems.append(f"{name}: {s}")
                ctx.close()


def main():
    base, shots = sys.argv[1].rstrip("/"), sys.argv[2]
    if KEY:
        try:
            urllib.request.urlopen(base + "/", timeout=10)
            check(False, "the page answered without a credential")
        except urllib.error.HTTPError as e:
            check(e.code == 401 and "Basic" in " ".join(e.headers.get_all("WWW-Authenticate") or []),
                  f"without a credential: {e.code}, challenges {e.headers.get_all('WWW-Authenticate')}")
    want = expected_figures(base)
    print(f"  expected from the JSON reports: {want}")
    dump_dom_pass(base, want)
    playwright_pass(base, want, shots)
    if problems:
        print("browser check FAILED:", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print("  browser check passed")


if __name__ == "__main__":
    main()
