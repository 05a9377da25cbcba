"""The report a researcher reads: ``report.html`` and ``claims.md`` built from synthetic claim
records (no training). Parsed with an HTML parser always; rendered in a real headless browser
where the machine has one (skipped with the reason otherwise)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bnstruct import plots
from bnstruct.experiments import EXPERIMENTS, Claim, get_config
from bnstruct.report import headline, key_line, write_report


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.items: list[str | Node] = []  # text and child elements, in document order

    @property
    def children(self) -> list[Node]:
        return [c for c in self.items if isinstance(c, Node)]

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        out = []
        for c in self.children:
            if (tag is None or c.tag == tag) and (
                    cls is None or cls in c.attrs.get("class", "").split()):
                out.append(c)
            out += c.all(tag, cls)
        return out

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        found = self.all(tag, cls)
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]

    def content(self) -> str:
        return " ".join(" ".join(c if isinstance(c, str) else c.content()
                                  for c in self.items).split())


class Tree(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.root = Node("#root", {}, None)
        self.cur = self.root

    def handle_starttag(self, tag, attrs):
        n = Node(tag, {k: v or "" for k, v in attrs}, self.cur)
        self.cur.items.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        assert n is not None, f"stray </{tag}>"
        self.cur = n.parent or self.root

    def handle_data(self, data):
        self.cur.items.append(data)


def parse(text: str) -> Node:
    t = Tree()
    t.feed(text)
    t.close()
    assert t.cur is t.root, "unclosed element"
    return t.root


def _figure(path: Path) -> str:
    fig = plots.new_figure((4, 3))
    fig.subplots().plot([0, 1], [0, 1])
    return str(plots.save_figure(fig, path))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    f1 = _figure(out / "figures" / "a.png")
    f2 = _figure(out / "figures" / "b.png")
    claims = [
        Claim("alpha", "alpha holds", measured="long measurement of alpha", expected="1",
              tolerance="0.1", passed=True, seconds=1.0, figures=(f1,),
              captions=("Alpha against depth, mean and standard error over the seeds.",),
              key="alpha = 1.02 ± 0.01", bound="|alpha - 1| <= 0.1",
              checked="The alpha of every net is one."),
        Claim("beta", "beta holds", measured="long measurement of beta", expected="0",
              tolerance="< 0.5", passed=False, seconds=2.0, figures=(f2,),
              captions=("Beta per net.",), key="slope 0.53", bound="< 0.5",
              checked="Beta saturates in depth.",
              why="the slope at c = 1/32 is still 0.53 at the deepest depths"),
        Claim("gamma", "gamma is reported", measured="gamma 3.7", expected="(finding)",
              tolerance="-", passed=True, kind="finding", key="rank 3.7 ± 0.3",
              bound="(finding)", checked="Gamma is reported."),
        Claim.crashed("delta", "delta holds", "claim", RuntimeError("exploded")),
    ]
    write_report(claims, out, mode="smoke", seconds=12.0)
    return out, claims


def test_headline_counts_claims_and_findings_apart():
    def c(name, passed, kind="claim"):
        return Claim(name, "", "", "", "", passed, kind=kind)
    ten = [c(str(i), i != 5) for i in range(9)] + [c("digits", True, "finding")]
    assert headline(ten) == "8 of 9 claims pass, 1 finding"
    crashed = Claim.crashed("x", "", "claim", ValueError("no"))
    assert headline([c("a", True), crashed]) == "1 of 2 claims pass, 1 error"
    assert headline([c("a", True), c("f", False, "finding")]) == (
        "1 of 1 claim pass, 1 finding (1 failed)")


def test_html_has_one_card_per_claim_with_badge_key_bound_and_figure(report):
    out, claims = report
    root = parse((out / "report.html").read_text())
    assert root.one("p", "headline").content() == "1 of 3 claims pass, 1 error, 1 finding"
    assert "docs/theory.md" in root.one("header").content()
    rows = root.one("table", "overview").all("tr")[1:]
    assert [r.all("a")[0].attrs["href"] for r in rows] == [
        f"#claim-{c.name}" for c in claims]  # each overview row links to its card
    cards = root.all("section", "claim")
    assert [s.attrs["id"] for s in cards] == [f"claim-{c.name}" for c in claims]
    words = {"alpha": "PASS", "beta": "FAIL", "gamma": "FINDING", "delta": "ERROR"}
    for s, c in zip(cards, claims, strict=True):
        assert s.one("h2").one("span", "badge").content() == words[c.name]
        key = s.one("p", "key").content()
        assert c.key in key and c.bound in key if c.error is None else "exploded" in key
        details = s.one("details")
        assert details.one("summary").content() == "Full measurement"
        assert "open" not in details.attrs  # the long text is folded away
        assert (c.measured if c.error is None else "exploded") in details.content()
        figs = s.all("figure")
        assert len(figs) == len(c.figures)  # the figure sits in its claim's card
        for fig, cap in zip(figs, c.captions, strict=True):
            assert fig.one("img").attrs["src"].startswith("data:image/png;base64,")
            assert cap in fig.one("figcaption").content()
            assert fig.one("img").attrs["alt"] == cap
    beta = cards[1]
    assert "Why it fails: the slope at c = 1/32" in beta.one("p", "why").content()
    assert not cards[0].all("p", "why")  # a pass has no failure reason
    assert "has no verdict" in cards[3].one("p", "why").content()
    assert cards[0].one("p", "checked").content() == "The alpha of every net is one."


def test_claims_md_has_the_same_structure(report):
    out, claims = report
    md = (out / "claims.md").read_text()
    assert f"**{headline(claims)}**" in md
    for c in claims:
        assert f"| [{c.name}](#claim-{c.name}) |" in md
        assert f'<a id="claim-{c.name}"></a>' in md
        assert f"**{key_line(c)}**" in md
    assert "**Why it fails:** the slope at c = 1/32" in md
    assert "*Figure 1. Alpha against depth" in md and "![alpha](figures/a.png)" in md
    assert md.count("<details><summary>Full measurement</summary>") == len(claims)
    data = json.loads((out / "claims.json").read_text())
    assert data["meta"]["headline"] == headline(claims)
    assert data["claims"][0]["captions"] == list(claims[0].captions)
    assert data["claims"][1]["why"] == claims[1].why


def test_every_registered_claim_has_its_summary_and_captions():
    """The summary is data the claim modules write: every figure stem has a caption, and each
    module's verdict fills key, bound and checked (checked here on the smoke configs'
    statements; the verdicts themselves are run in the smoke reproduce)."""
    for name, mod in EXPERIMENTS.items():
        assert mod.CAPTIONS, name
        assert all(len(cap.split()) >= 12 for cap in mod.CAPTIONS.values()), name
        assert mod.statement(get_config(name, "smoke"))


# --------------------------------------------------------------------------- a real browser

_BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome",
             "headless_shell")
_PROBE = """<script>
window.addEventListener('load', () => {
  const r = e => e.getBoundingClientRect();
  const cards = [...document.querySelectorAll('section.claim')].map(s => {
    const t = r(s.querySelector('.text')), f = s.querySelector('figure');
    return {id: s.id, text_right: t.right, text_top: t.top,
            fig_left: f ? r(f).left : null, fig_top: f ? r(f).top : null,
            details_hidden: !s.querySelector('details').open
                            && !s.querySelector('details dd').checkVisibility()};
  });
  const imgs = [...document.querySelectorAll('img')].map(
    i => ({ok: i.complete && i.naturalWidth > 0, width: r(i).width}));
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({inner: innerWidth,
    scroll: document.documentElement.scrollWidth, cards, imgs,
    headline: document.querySelector('.headline').innerText});
  document.body.appendChild(out);
});
</script></body>"""


def _browser() -> str | None:
    return next((b for b in map(shutil.which, _BROWSERS) if b), None)


def _render(browser: str, page: Path, width: int) -> dict:
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--window-size={width},900", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    import html
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.skipif(_browser() is None, reason="no headless browser on this machine (install "
                    "Debian's chromium-headless-shell or chromium to run this check)")
def test_report_renders_in_a_real_browser(report, tmp_path):
    out, claims = report
    page = tmp_path / "probe.html"
    page.write_text((out / "report.html").read_text().replace("</body>", _PROBE))
    browser = _browser()
    assert browser is not None
    wide = _render(browser, page, 1280)
    assert wide["headline"] == headline(claims)
    assert wide["scroll"] <= wide["inner"]  # nothing overflows sideways
    assert wide["imgs"] and all(i["ok"] and i["width"] >= 300 for i in wide["imgs"])
    for c in wide["cards"]:
        assert c["details_hidden"], c  # the full measurement is folded
        if c["fig_left"] is not None:
            assert c["fig_left"] >= c["text_right"], c  # the figure beside its claim
    narrow = _render(browser, page, 600)
    assert narrow["scroll"] <= narrow["inner"]
    for c in narrow["cards"]:
        if c["fig_top"] is not None:
            assert c["fig_top"] > c["text_top"], c  # one column on a narrow screen
