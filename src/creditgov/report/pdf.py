"""The regulator pack: a decision report run printed to one PDF by headless Chromium.

`creditgov report --pdf` prints the run's pages in the order an examiner reads them (the run's index, the
portfolio report, the model card, each sampled decision's page, then each decision's notices in English and
Chinese, its collections treatment's notices after them), each as Chromium prints it (Page.printToPDF over the DevTools protocol on a pipe: one browser for
the whole pack, no port opened, no network), and merges them with pypdf behind a cover and contents page that
gives each document's first page in the pack. Every document is a bookmark; links to local files are dropped
(a PDF handed to a regulator carries no path of the machine that made it).
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from pathlib import Path

from pypdf import PdfReader, PdfWriter

from creditgov.errors import CreditGovError
from creditgov.report.pages import PACK_NAME, RUN_SUMMARY, link_pack, render

CHROMIUM_ENV = "CREDITGOV_CHROMIUM"  # a Chromium (or Chrome) binary other than the one on PATH
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
A4 = (8.27, 11.69)  # inches
MARGINS = {"marginTop": 0.55, "marginBottom": 0.6, "marginLeft": 0.5, "marginRight": 0.5}
TIMEOUT = 120.0  # seconds for one DevTools reply (a page load or a print)


class ChromiumError(CreditGovError):
    """No Chromium to print with, or Chromium failed while printing."""


@dataclass(frozen=True)
class PackDocument:
    section: str  # Run, Portfolio, Model card, Decision, Notice
    title: str
    path: Path


@dataclass(frozen=True)
class Pack:
    path: Path
    pages: int
    contents: list[tuple[PackDocument, int]]  # each document and its first page in the pack (1-based)


def find_chromium() -> str | None:
    """$CREDITGOV_CHROMIUM, else the first Chromium or Chrome on PATH (None when there is none)."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named if Path(named).is_file() else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def pack_documents(run_dir: str | Path) -> list[PackDocument]:
    """The run's pages in pack order; decisions and notices in the order the run's index lists them."""
    d = Path(run_dir)
    index = d / "index.html"
    if not index.is_file():
        raise CreditGovError(f"{d}: no index.html (not a decision report run: make one with creditgov report)")
    html = index.read_text(encoding="utf-8")
    ids = list(dict.fromkeys(re.findall(r'href="decisions/([^"/]+)\.html"', html)))
    docs = [PackDocument("Run", "Decision report: index", index)]
    if (d / "portfolio.html").is_file():
        docs.append(PackDocument("Portfolio", "Portfolio report", d / "portfolio.html"))
    if (d / "model_card.html").is_file():
        docs.append(PackDocument("Model card", "Model card", d / "model_card.html"))
    docs += [PackDocument("Decision", f"Decision {i}", d / "decisions" / f"{i}.html") for i in ids]
    for i in ids:
        for kind, what in (("", "Notice"), (".treatment", "Collections notice")):  # decision, then treatment
            for lang, name in (("en", "English"), ("zh", "Chinese")):
                p = d / "notices" / f"{i}{kind}.{lang}.html"
                if p.is_file():
                    docs.append(PackDocument("Notice", f"{what} {i} ({name})", p))
    missing = [doc.path for doc in docs if not doc.path.is_file()]
    if missing:
        raise CreditGovError(f"{missing[0]}: linked from {index} but missing: the run is incomplete")
    return docs


# in the child: copy the two pipe ends above any low fd, put them on 3 and 4 (inheritable), then run Chromium
_SHIM = ("import fcntl, os, sys\n"
         "a, b = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])\n"
         "os.dup2(a, 3)\nos.dup2(b, 4)\nos.close(a)\nos.close(b)\n"
         "os.execv(sys.argv[3], sys.argv[3:])\n")


class _Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: it reads commands
    on fd 3 and writes replies on fd 4, NUL-terminated JSON), one page target reused for every document."""

    def __init__(self, binary: str, profile: Path):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", "about:blank"]
        # the pipe ends become the child's fds 3 and 4 by a small exec shim (no preexec_fn: not safe in a process
        # with threads; and a shell's redirections take single-digit fds only)
        cmd = [sys.executable, "-I", "-S", "-c", _SHIM, str(to_child_r), str(from_child_w), binary, *args]
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, pass_fds=(to_child_r, from_child_w))
        except OSError as exc:
            raise ChromiumError(f"{binary}: cannot start Chromium ({exc.strerror or exc})") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._buf = b""
        self._next = 0
        try:
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            self.call("Page.enable", session=True)
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._r], [], [], TIMEOUT)
            chunk = os.read(self._r, 1 << 20) if ready else None
            if not chunk:
                raise ChromiumError("Chromium " + ("stopped answering" if chunk is None else "exited")
                                    + " while printing the pack")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False, until: str | None = None) -> dict:
        """Send one command and return its result; with `until`, also wait for that event (e.g. the page load)."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise ChromiumError("Chromium exited while printing the pack") from None
        result, seen = None, until is None
        while result is None or not seen:
            m = self._read()
            if m.get("id") == self._next:
                if "error" in m:
                    raise ChromiumError(f"Chromium refused {method}: {m['error'].get('message', m['error'])}")
                result = m.get("result", {})
            elif until is not None and m.get("method") == until:
                seen = True
        return result

    def print_pdf(self, page: Path, footer: str) -> bytes:
        nav = self.call("Page.navigate", {"url": page.resolve().as_uri()}, session=True, until="Page.loadEventFired")
        if nav.get("errorText"):
            raise ChromiumError(f"{page}: Chromium could not open it ({nav['errorText']})")
        out = self.call("Page.printToPDF", {
            "paperWidth": A4[0], "paperHeight": A4[1], **MARGINS, "printBackground": True,
            "displayHeaderFooter": True, "headerTemplate": "<span></span>",
            "footerTemplate": '<div style="font-size:7px;color:#55607a;width:100%;margin:0 0.5in;'
                              'display:flex;justify-content:space-between"><span>' + escape(footer)
                              + '</span><span>page <span class="pageNumber"></span> of '
                              '<span class="totalPages"></span></span></div>'}, session=True)
        return base64.b64decode(out["data"])

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except ChromiumError:
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._w)
        os.close(self._r)


def _summary(run_dir: Path) -> dict:
    """What the run's run.json says of it (model, policy, rows, what was decided, status); None where absent."""
    try:
        summary = json.loads((run_dir / RUN_SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    return {k: summary.get(k) for k in ("model", "policy", "rows", "detail", "verdict")}


def _cover(run_dir: Path, contents: list[tuple[PackDocument, int]], generated_at: str) -> str:
    return render("pack_cover.html", run=run_dir.name, summary=_summary(run_dir), contents=contents,
                  generated_at=generated_at)


def write_pack(run_dir: str | Path, out: str | Path | None = None, chromium: str | None = None,
               log=lambda _msg: None) -> Pack:
    """Print a decision report run to one PDF (default <run>/regulator-pack.pdf, then linked from the run's
    index.html and reports/index.html)."""
    run_dir = Path(run_dir)
    docs = pack_documents(run_dir)
    binary = chromium or find_chromium()
    if binary is None:
        raise ChromiumError(f"no Chromium to print the pack with: install Debian's chromium package, or set "
                            f"{CHROMIUM_ENV} to a Chromium or Chrome binary")
    out = Path(out) if out is not None else run_dir / PACK_NAME
    generated_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tempfile.TemporaryDirectory(prefix="creditgov-pack-") as tmp:
        browser = _Browser(binary, Path(tmp) / "profile")
        try:
            printed = []
            for k, doc in enumerate(docs, 1):
                log(f"printing {k}/{len(docs)}: {doc.title}")
                printed.append(PdfReader(io.BytesIO(browser.print_pdf(doc.path, f"{run_dir.name} · {doc.title}"))))
            # the cover lists each document's first page, which depends on the cover's own length: print it
            # until its length is the one its page numbers assumed
            cover_pages, cover = 1 + len(docs) // 30, None  # about 30 contents lines fit on a page
            cover_file = Path(tmp) / "cover.html"
            for _ in range(4):
                first, contents = cover_pages + 1, []
                for doc, reader in zip(docs, printed):
                    contents.append((doc, first))
                    first += len(reader.pages)
                cover_file.write_text(_cover(run_dir, contents, generated_at), encoding="utf-8")
                cover = PdfReader(io.BytesIO(browser.print_pdf(cover_file, f"{run_dir.name} · contents")))
                if len(cover.pages) == cover_pages:
                    break
                cover_pages = len(cover.pages)
        finally:
            browser.close()
    writer = PdfWriter()
    writer.append(cover, outline_item="Cover and contents")
    sections: dict[str, object] = {}
    for doc, reader in zip(docs, printed):
        start = len(writer.pages)
        writer.append(reader)
        if doc.section in ("Decision", "Notice"):
            if doc.section not in sections:
                sections[doc.section] = writer.add_outline_item(
                    "Sampled decisions" if doc.section == "Decision" else "Customer notices", start)
            writer.add_outline_item(doc.title, start, parent=sections[doc.section])
        else:
            writer.add_outline_item(doc.title, start)
    for page in writer.pages:  # links to the local files the pages were printed from
        if "/Annots" in page:
            del page["/Annots"]
    writer.add_metadata({"/Title": f"creditgov regulator pack: {run_dir.name}", "/Creator": "creditgov",
                         "/Producer": "creditgov (Chromium, pypdf)"})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    with open(tmp_out, "wb") as fh:
        writer.write(fh)
    os.replace(tmp_out, out)
    if out.resolve() == (run_dir / PACK_NAME).resolve():  # the run's own pack: its index pages link it
        link_pack(run_dir, len(writer.pages))
    return Pack(out, len(writer.pages), contents)
