"""tools/docs_check.py (`make docs-check`): finding the pages and their animations, the
report and the missing-tool errors without a browser; then the browser check itself on small
hand-made sites: a real to_jshtml animation passes, and a frozen animation, a console error,
an uncaught exception and a missing file each fail naming their page."""

import importlib.util
import pathlib
import shutil
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("docs_check", ROOT / "tools" / "docs_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


dc = _load()


def _jshtml(frames):
    """matplotlib's own to_jshtml player over images of the given values."""
    pytest.importorskip("matplotlib")
    import numpy as np
    from matplotlib.animation import FuncAnimation
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    ax = fig.subplots()
    im = ax.imshow(np.zeros((2, 2)), vmin=0, vmax=max(frames) or 1)
    anim = FuncAnimation(fig, lambda n: im.set_data(np.full((2, 2), frames[n])),
                         frames=len(frames))
    return anim.to_jshtml()


def _site(tmp_path, pages):
    site = tmp_path / "site"
    for name, body in pages.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(f"<!doctype html><html><body>{body}</body></html>")
    return site


# --- without a browser -----------------------------------------------------------------


def test_pages_are_every_html_file_of_the_site(tmp_path):
    site = _site(tmp_path, {"index.html": "", "a/index.html": "", "a/b/index.html": "",
                            "404.html": ""})
    (site / "a" / "data.json").write_text("{}")
    assert dc.pages(site) == ["404.html", "a/b/index.html", "a/index.html", "index.html"]


def test_a_missing_site_says_to_build_it(tmp_path):
    with pytest.raises(dc.Missing, match=r"no built site at .*nowhere/ \(no index\.html\): "
                       r"run `make docs` first"):
        dc.pages(tmp_path / "nowhere")
    assert dc.main(["--site", str(tmp_path / "nowhere"), "--chromium", "sh"]) == 2


def test_animations_and_their_declared_frames_are_found():
    html = "<p>text</p>" + _jshtml([0, 1, 2]) + _jshtml([3, 4])
    found = dc.animations(html)
    assert sorted(found.values()) == [2, 3] and all(len(k) == 32 for k in found)
    assert dc.animations("<img id='_anim_img'> var frames = new Array(3);") == {}


def test_screenshot_names_follow_the_page_path():
    assert [dc.screenshot_name(p) for p in ["index.html", "api/nn/index.html", "404.html"]] \
        == ["index.png", "api__nn.png", "404.png"]


def test_no_chromium_is_named_with_the_fix(monkeypatch):
    monkeypatch.setattr(dc.shutil, "which", lambda name: None)
    with pytest.raises(dc.Missing, match=r"no Chromium found \(looked for chromium, "
                       r"chromium-browser, google-chrome on the PATH\); install it"):
        dc.chromium()
    with pytest.raises(dc.Missing, match=r"looked for '/opt/chrome'\); .*--chromium PATH"):
        dc.chromium("/opt/chrome")


def test_the_summary_names_every_failing_page():
    results = [dc.PageResult("index.html", animations=0, screenshot="s/index.png",
                             external=["https://fonts.example/css", "https://cdn.example/x"]),
               dc.PageResult("a/index.html", problems=["console error: boom (at x)"]),
               dc.PageResult("b/index.html", problems=["did not load: HTTP 404"])]
    text, ok = dc.summary(results)
    assert not ok
    assert "ok   index.html (0 animations stepped, 2 requests to cdn.example, fonts.example " \
        "answered empty) -> s/index.png" in text
    assert "FAIL a/index.html\n     console error: boom (at x)" in text
    assert text.endswith("docs-check: 2 of 3 pages failed: a/index.html, b/index.html")
    assert dc.summary(results[:1]) == (text.splitlines()[0]
                                        + "\ndocs-check: all 1 pages passed", True)


# --- in Chromium -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_path():
    pytest.importorskip("playwright", reason="playwright absent: pip install -e '.[docs-check]'")
    found = next((shutil.which(b) for b in dc.BROWSERS if shutil.which(b)), None)
    if found is None:
        pytest.skip("no Chromium on the PATH (apt-get install chromium)")
    return found


def test_a_page_with_a_working_animation_passes(tmp_path, browser_path):
    site = _site(tmp_path, {"index.html": "<h1>home</h1>" + _jshtml([0, 1, 2])})
    (result,) = dc.check_site(site, tmp_path / "shots", executable=browser_path)
    assert result.problems == [] and result.animations == 1
    assert pathlib.Path(result.screenshot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the player's icon font is on another host: asked for, answered empty, reported
    assert any("font-awesome" in u for u in result.external)


def test_each_broken_page_fails_with_its_problem(tmp_path, browser_path):
    site = _site(tmp_path, {
        "index.html": "<p>fine</p>",
        "frozen/index.html": _jshtml([1, 1, 1]),
        "logs/index.html": "<script>console.error('boom from the page')</script>",
        "throws/index.html": "<script>null.x</script>",
        "missing/index.html": "<link rel='stylesheet' href='../gone.css'>",
    })
    results = {r.page: r for r in dc.check_site(site, tmp_path / "shots",
                                                 executable=browser_path)}
    assert results["index.html"].problems == []
    (frozen,) = results["frozen/index.html"].problems
    assert "does not step: Next frame went from frame 0 to 1, the same picture" in frozen
    assert any("console error: boom from the page" in p
               for p in results["logs/index.html"].problems)
    assert any(p.startswith("uncaught exception: TypeError")
               for p in results["throws/index.html"].problems)
    assert "HTTP 404 for gone.css" in results["missing/index.html"].problems
    text, ok = dc.summary(list(results.values()))
    assert not ok and text.endswith(
        "4 of 5 pages failed: frozen/index.html, logs/index.html, missing/index.html, "
        "throws/index.html")


def test_the_command_line_exits_1_on_a_failing_page(tmp_path, browser_path, capsys):
    site = _site(tmp_path, {"index.html": "<script>console.error('x')</script>"})
    assert dc.main(["--site", str(site), "--out", str(tmp_path / "o"),
                    "--chromium", browser_path]) == 1
    assert "FAIL index.html" in capsys.readouterr().err
