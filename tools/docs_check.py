"""`make docs-check`: every page of the built site (``make docs``) opened in a real headless
Chromium, the system's, driven by playwright, through a local HTTP server.

A page passes when it loads with HTTP 200, logs no console error and throws no uncaught
exception, finds every file of the site it asks for, and each matplotlib ``to_jshtml``
animation on it has all the frames its HTML declares, decoded, and moves to a different picture
when its "Next frame" button is clicked. A full-page screenshot of each page is written to the
output folder. The check runs offline: a request to another host (the theme's web font, the
icon font of the animations' buttons) is answered with an empty body, and each page's report
names those hosts; without that font the buttons draw no icon, so the check clicks them by
dispatching the click event rather than by pointer.
Exits 1 naming every page that failed, 2 when the site, playwright or Chromium is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import pathlib
import re
import shutil
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
# matplotlib's to_jshtml: the player's <img> and, in its script, the declared frame count
ANIMATION = re.compile(
    r'var img_id = "_anim_img([0-9a-f]+)";.*?var frames = new Array\((\d+)\);', re.DOTALL)
TIMEOUT_MS = 60_000


class Missing(Exception):
    """Something the check needs is not there (the site, playwright, Chromium)."""


@dataclass
class PageResult:
    """What one page's check found.

    Attributes:
      page: the page's path in the site (``notebooks/x/index.html``).
      problems: one line per failure; empty when the page passed.
      animations: how many to_jshtml animations the page has.
      external: the URLs on other hosts the page asked for (answered empty).
      screenshot: the full-page PNG's path, or None where none was taken.
    """

    page: str
    problems: list[str] = field(default_factory=list)
    animations: int = 0
    external: list[str] = field(default_factory=list)
    screenshot: str | None = None


def pages(site: str | os.PathLike) -> list[str]:
    """The HTML pages of a built site, as paths relative to it, sorted.

    Args:
      site: the folder ``mkdocs build`` wrote.

    Returns:
      Every ``*.html`` file under ``site``.
    """
    root = pathlib.Path(site)
    if not (root / "index.html").is_file():
        raise Missing(f"docs-check: no built site at {root}/ (no index.html): run `make docs` "
                      "first")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html"))


def animations(html: str) -> dict[str, int]:
    """The to_jshtml animations in a page's HTML.

    Args:
      html: the page's source.

    Returns:
      Each animation's id mapped to the number of frames its script declares.
    """
    return {m.group(1): int(m.group(2)) for m in ANIMATION.finditer(html)}


def chromium(given: str | None = None) -> str:
    """The Chromium to drive: ``given`` if it is an executable, else the first of
    ``BROWSERS`` on the PATH.

    Args:
      given: a path or command name, or None to search.

    Returns:
      The executable's path.
    """
    found = shutil.which(given) if given else next(
        (p for p in map(shutil.which, BROWSERS) if p), None)
    if found is None:
        looked = repr(given) if given else ", ".join(BROWSERS) + " on the PATH"
        raise Missing(f"docs-check: no Chromium found (looked for {looked}); install it "
                      "(apt-get install chromium) or pass --chromium PATH")
    return found


def screenshot_name(page: str) -> str:
    """The screenshot's file name for a page: its folder path with ``/`` as ``__``."""
    stem = page.removesuffix(".html").removesuffix("index").strip("/")
    return (stem.replace("/", "__") or "index") + ".png"


@contextlib.contextmanager
def serve(site: str | os.PathLike) -> Iterator[str]:
    """Serves ``site`` over HTTP on a free port of 127.0.0.1 while the block runs.

    Args:
      site: the folder to serve.

    Yields:
      The base URL, ending in ``/``.
    """

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=os.fspath(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


_STATE = """id => {
  const a = window['anim' + id];
  const img = document.getElementById('_anim_img' + id);
  return {frame: a.current_frame, src: img.src, shown: img.complete && img.naturalWidth > 0};
}"""
_FRAMES = """id => {
  const a = window['anim' + id];
  a.pause_animation();
  a.first_frame();
  return {n: a.frames.length,
          broken: a.frames.map((f, i) => [i, f.naturalWidth]).filter(p => p[1] === 0)
                          .map(p => p[0])};
}"""


def _check_animation(page, anim: str, declared: int) -> list[str]:
    """The problems of one to_jshtml animation on a loaded page."""
    from playwright.sync_api import Error

    name = f"animation {anim[:8]}"
    try:
        page.wait_for_function(f"typeof window['anim{anim}'] !== 'undefined'", timeout=5_000)
        page.wait_for_function(f"window['anim{anim}'].frames.every(f => f.complete)",
                               timeout=TIMEOUT_MS)
    except Error as e:
        return [f"{name}: never started or its frames never loaded ({str(e).splitlines()[0]})"]
    frames = page.evaluate(_FRAMES, anim)
    problems = []
    if frames["n"] != declared or declared < 2:
        problems.append(f"{name}: {frames['n']} frames present, {declared} declared (a "
                        "moving picture needs at least 2)")
    if frames["broken"]:
        problems.append(f"{name}: frames {frames['broken'][:5]} do not decode as images")
    before = page.evaluate(_STATE, anim)
    # a dispatched click runs the button's own handler; a pointer click would also need
    # the button's icon, which comes from a font on another host (see the module docstring)
    page.locator(f'button[onclick="anim{anim}.next_frame()"]').dispatch_event("click")
    after = page.evaluate(_STATE, anim)
    if after["frame"] != before["frame"] + 1 or after["src"] == before["src"]:
        problems.append(f"{name}: does not step: Next frame went from frame "
                        f"{before['frame']} to {after['frame']}"
                        + (", the same picture" if after["src"] == before["src"] else ""))
    if not after["shown"]:
        problems.append(f"{name}: the frame shown after a step does not display")
    return problems


def check_page(browser, base: str, page_path: str, out: pathlib.Path) -> PageResult:
    """Opens one page in a new browser context and checks it (see the module docstring).

    Args:
      browser: a playwright Browser.
      base: the site's base URL (``serve``).
      page_path: the page's path in the site.
      out: the folder for the screenshot.

    Returns:
      The page's ``PageResult``.
    """
    result = PageResult(page_path)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    kinds = {"stylesheet": "text/css", "script": "text/javascript"}

    def offline(route) -> None:
        result.external.append(route.request.url)
        route.fulfill(status=200, body="",
                      content_type=kinds.get(route.request.resource_type, "text/plain"))

    context.route(lambda url: not url.startswith(base), offline)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and result.problems.append(
        f"console error: {m.text} (at {m.location.get('url') or '?'})"))
    page.on("pageerror", lambda e: result.problems.append(
        f"uncaught exception: {e.name}: {e.message}"))
    page.on("response", lambda r: r.status >= 400 and r.url.startswith(base)
            and r.url != base + page_path
            and result.problems.append(f"HTTP {r.status} for {r.url[len(base):]}"))
    try:
        response = page.goto(base + page_path, wait_until="load", timeout=TIMEOUT_MS)
        if response is None or response.status != 200:
            status = "no response" if response is None else f"HTTP {response.status}"
            result.problems.append(f"did not load: {status}")
            return result
        found = animations(response.text())
        result.animations = len(found)
        for anim, declared in found.items():
            result.problems.extend(_check_animation(page, anim, declared))
        out.mkdir(parents=True, exist_ok=True)
        shot = out / screenshot_name(page_path)
        page.screenshot(path=shot, full_page=True, timeout=TIMEOUT_MS)
        result.screenshot = os.fspath(shot)
    finally:
        context.close()
    return result


def check_site(site: str | os.PathLike, out: str | os.PathLike, *,
               executable: str) -> list[PageResult]:
    """Checks every page of a built site in headless Chromium.

    Args:
      site: the folder ``mkdocs build`` wrote.
      out: where the screenshots go (created).
      executable: the Chromium to drive (``chromium``).

    Returns:
      One ``PageResult`` per page, in ``pages`` order.
    """
    names = pages(site)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        raise Missing("docs-check needs playwright: pip install -e '.[docs-check]' (make "
                      "docs-check installs it)") from e
    with serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            return [check_page(browser, base, name, pathlib.Path(out)) for name in names]
        finally:
            browser.close()


def summary(results: Sequence[PageResult]) -> tuple[str, bool]:
    """The report: one line per page, each failing page's problems under it, and a verdict.

    Args:
      results: what ``check_site`` returned.

    Returns:
      (the report's text, whether every page passed).
    """
    lines, failed = [], []
    for r in results:
        hosts = sorted({urllib.parse.urlsplit(u).netloc for u in r.external})
        extra = (f", {len(r.external)} requests to {', '.join(hosts)} answered empty"
                 if r.external else "")
        if r.problems:
            failed.append(r.page)
            lines.append(f"FAIL {r.page}")
            lines.extend(f"     {p}" for p in r.problems)
        else:
            lines.append(f"ok   {r.page} ({r.animations} animations stepped{extra}) -> "
                         f"{r.screenshot}")
    if failed:
        lines.append(f"docs-check: {len(failed)} of {len(results)} pages failed: "
                     + ", ".join(failed))
    else:
        lines.append(f"docs-check: all {len(results)} pages passed")
    return "\n".join(lines), not failed


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: checks the site and prints ``summary``.

    Args:
      argv: the flags (default: the command line's).

    Returns:
      0 when every page passed, 1 when one failed, 2 when something needed is missing.
    """
    parser = argparse.ArgumentParser(prog="docs_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default="site", help="the built site (default: site)")
    parser.add_argument("--out", default="site-check",
                        help="where the screenshots go (default: site-check)")
    parser.add_argument("--chromium", default=None,
                        help=f"the browser to drive (default: the first of {', '.join(BROWSERS)}"
                        " on the PATH)")
    args = parser.parse_args(argv)
    try:
        executable = chromium(args.chromium)
        results = check_site(args.site, args.out, executable=executable)
    except Missing as e:
        print(e, file=sys.stderr)
        return 2
    text, ok = summary(results)
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
