#!/usr/bin/env -S python3 -S
# wget: save the page and its requisites (CSS, images, scripts; no recursion) with GNU wget,
# plus a WARC of every request.
#
# Inputs
#   argv  --url=<url> --snapshot-id --crawl-id --depth (unknown options are ignored)
#   env   WGET_ENABLED, WGET_TIMEOUT (seconds: wget --timeout and a cap on the whole run),
#         WGET_BINARY (else `wget` on PATH), WGET_USER_AGENT, WGET_SAVE_WARC,
#         WGET_EXTRA_ARGS (shell-quoted), CHECK_SSL_VALIDITY, SNAP_DIR
# Outputs (cwd = <snapshot>/wget/)
#   <host+port>/<path>.html and requisites, links converted for offline viewing; the page as
#     served kept beside it as <path>.html.orig when wget converted any link
#   warc/<unix time>.warc.gz
#   wget.json: {url, final_url, main_html, original_html, http_status, exit_code, errors,
#     refused, warc} -- other hooks (title, favicon, htmltotext, parse_html_urls) read
#     main_html (original_html: as served) and final_url from it
#   stdout: one ArchiveResult; output_str = the main HTML's path relative to the snapshot.
# A server error page (e.g. 404, wget exit 8) is `failed` with "HTTP 404 Not Found" as the
# error, as in ArchiveBox -- the URL did not give the page an archivist wanted -- but the error
# page and the WARC are kept and listed; no page saved (connection refused, DNS failure,
# timeout) is `failed` too, with wget's reason. wget goes through the egress proxy named by
# http_proxy/https_proxy (`-e use_proxy=on` whatever a wgetrc says): a page, redirect hop or
# requisite it refused is not saved (wget keeps the proxy's 403 body; it is removed), a
# refused page is `failed` with the proxy's reason, refused requisites are listed in `refused`;
# a server the proxy could not reach (its 502) fails the page like a connection error.
from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import time
from urllib.parse import urlsplit

DEFAULT_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0 Safari/537.36 archiveflow/0.1 (+wget)")
SAVED_RE = re.compile(r'URL:\s*(\S+)\s+\[[^\]]*\]\s+->\s+"([^"]+)"')
ERROR_RE = re.compile(r"^(\S+):\s*\n\S+ \S+ ERROR (\d+): (.*)$", re.MULTILINE)
HTML_EXT = (".html", ".htm", ".xhtml")
PROXY_REASONS = {"Refused by archiveflow egress policy": "refused",
                 "Not reached by archiveflow egress proxy": "unreachable"}
PROXY_BODY = b"archiveflow egress:"


# ---- shared by the crawl and snapshot hooks (tests/plugins/test_shared_code.py) ----
EGRESS_HEADER = "X-Archiveflow-Egress"


def parse_args(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for a in argv:
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            args[key.replace("-", "_")] = val if eq else "true"
    return args


def emit(record: dict) -> None:
    print(json.dumps(record, ensure_ascii=False), flush=True)


def env_bool(name: str, default: bool) -> bool:
    val = os.environ.get(name)
    if val is None or val.strip() == "":
        return default
    return val.strip().lower() in ("1", "true", "yes", "on", "y")


def env_int(name: str, default: int) -> int:
    try:
        return int(float(os.environ.get(name, "") or default))
    except ValueError:
        return default


def http_url(url: str) -> str:
    """The URL as a browser sends it: non-ASCII and spaces percent-encoded as UTF-8
    (urllib sends the request line as ASCII and fails on `/Köln` otherwise)."""
    from urllib.parse import quote

    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")


def egress_failure(answer: object) -> str | None:
    """The egress proxy's reason when it, not the server, answered this request (an HTTPError
    whose headers carry X-Archiveflow-Egress: refused or unreachable), else None.

    Every crawl hook is pointed at archiveflow's egress proxy (http_proxy/https_proxy): it
    refuses private-network targets, also after redirects (403), and answers 502 when the
    server cannot be reached. Neither is the page's answer.
    """
    headers = getattr(answer, "headers", None)
    if headers is None or not headers.get(EGRESS_HEADER, "").strip():
        return None
    try:
        body = answer.read(2000).decode("utf-8", "replace").strip()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        body = ""
    return body or f"archiveflow egress: {headers.get(EGRESS_HEADER, '').strip()}"
# ---- end of shared part ----


def fail(msg: str, **extra: object) -> int:
    emit({"type": "ArchiveResult", "status": "failed", "output_str": msg[:300], "error": msg,
          **({"output_json": extra} if extra else {})})
    return 1


def expected_path(url: str) -> str:
    """Where wget --force-directories --restrict-file-names=windows -E saves a URL."""
    parts = urlsplit(url)
    host = parts.netloc.split("@")[-1].replace(":", "+")
    path = parts.path or "/"
    if path.endswith("/"):
        path += "index.html"
    if parts.query:
        path += "@" + parts.query.replace("/", "%2F")
    if not path.lower().endswith(HTML_EXT):
        path += ".html"
    return host + path


def proxy_failures(errors: list[dict], since: float) -> list[dict]:
    """The errors that were the egress proxy's answers (a refusal, or a server it could not
    reach), each with the proxy's reason and its kind ("refused" or "unreachable").

    wget keeps the proxy's body (--content-on-error), under the name of the URL it asked
    for (after a redirect: the first URL's name), so every file of this run that is such a
    body is removed: it is not the target's content.
    """
    failed = [(e, kind) for e in errors for phrase, kind in PROXY_REASONS.items()
              if e["reason"].startswith(phrase)]
    if not failed:
        return []
    bodies = []
    for folder, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d != "warc"]
        for name in files:
            path = os.path.join(folder, name)
            if os.path.getmtime(path) < since or os.path.getsize(path) > 4096:
                continue
            with open(path, "rb") as f:
                body = f.read(4096)
            if body.startswith(PROXY_BODY):
                bodies.append(body.decode("utf-8", "replace").strip())
                os.remove(path)
    out = []
    for err, kind in failed:
        host = urlsplit(err["url"]).hostname or ""
        reason = next((b for b in bodies if f" {host}" in b or f"{host}:" in b),
                      f"archiveflow egress: {err['reason']}")
        out.append({"url": err["url"], "reason": reason, "kind": kind})
    return out


def find_main_html(url: str, first_saved: re.Match | None, since: float) -> str | None:
    """The page's HTML file as wget saved it in this run (a retry reuses the folder, so a file
    older than this run is a leftover, not the page)."""
    if first_saved and first_saved.group(2).lower().endswith(HTML_EXT):
        candidates = [first_saved.group(2), expected_path(url)]
    else:
        candidates = [expected_path(url)]
    for path in candidates:
        if os.path.isfile(path) and os.path.getmtime(path) >= since:
            return path
    return None


def which(name: str) -> str | None:
    """`name` on PATH, as shutil.which finds it (that module's imports, bz2 and lzma
    among them, cost more than this hook's own work)."""
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run_wget(cmd: list[str], timeout: float) -> tuple[int | None, bytes]:
    """Run wget with stdout and stderr in one pipe: (exit code, its output); the exit code is
    None when it ran past `timeout` and was killed.

    os.posix_spawn, not subprocess: importing subprocess cost this hook ~10 ms of CPU per
    page (bench/hook_cpu.py), a fifth of what it costs in all. wget stays in this hook's
    process group, so the runner's group kill reaches it too.
    """
    r, w = os.pipe()
    try:
        pid = os.posix_spawn(cmd[0], cmd, os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, w, 1),
                                           (os.POSIX_SPAWN_DUP2, w, 2)])
    finally:
        os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(r, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None, b"".join(chunks)
            if not poller.poll(max(1, int(left * 1000))):
                continue
            data = os.read(r, 1 << 16)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def write_info(info: dict) -> None:
    """wget.json: where the page is, for the hooks that read wget's HTML instead of fetching."""
    with open("wget.json", "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)


def main() -> int:
    args = parse_args(sys.argv[1:])
    url = args.get("url", "")
    if not env_bool("WGET_ENABLED", True):
        emit({"type": "ArchiveResult", "status": "skipped", "output_str": "WGET_ENABLED=False"})
        return 10
    if not re.match(r"^(https?|ftp)://", url):
        emit({"type": "ArchiveResult", "status": "skipped",
              "output_str": f"not an http(s)/ftp URL: {url[:100]}"})
        return 10
    binary = os.environ.get("WGET_BINARY") or "wget"
    if os.sep not in binary:
        binary = which(binary) or ""
    if not binary or not os.access(binary, os.X_OK):
        return fail("wget not found: run archiveflow install")
    timeout = env_int("WGET_TIMEOUT", env_int("TIMEOUT", 60))
    warc_rel = None
    cmd = [
        binary, "--no-verbose", "--adjust-extension", "--convert-links", "--backup-converted",
        "--force-directories", "--span-hosts", "--no-parent", "-e", "robots=off",
        "-e", "use_proxy=on", "--page-requisites",
        "--restrict-file-names=windows", "--content-on-error", "--tries=1",
        f"--timeout={max(1, timeout)}",
        f"--user-agent={os.environ.get('WGET_USER_AGENT') or DEFAULT_UA}",
    ]
    if env_bool("WGET_SAVE_WARC", True):
        os.makedirs("warc", exist_ok=True)
        warc_rel = f"warc/{int(time.time())}"
        cmd.append(f"--warc-file={warc_rel}")
    if not env_bool("CHECK_SSL_VALIDITY", True):
        cmd.append("--no-check-certificate")
    if os.environ.get("WGET_EXTRA_ARGS", "").strip():
        import shlex  # only when set: its import costs more than the split

        cmd += shlex.split(os.environ["WGET_EXTRA_ARGS"])
    cmd.append(url)

    if os.path.exists("wget.json"):
        os.remove("wget.json")  # from an earlier attempt: it must not point later hooks at it
    # Same process group as this hook: the runner's group kill reaches wget too.
    started = time.monotonic()
    since = time.time() - 1  # mtime granularity
    try:
        returncode, output = run_wget(cmd, timeout + 5)
    except OSError as e:
        return fail(f"cannot run {binary}: {e}")
    if returncode is None:
        return fail(f"wget timed out after {timeout + 5}s")
    log = output.decode("utf-8", errors="replace")
    secs = time.monotonic() - started

    errors = [{"url": u, "status": int(c), "reason": r.strip().rstrip(".")}
              for u, c, r in ERROR_RE.findall(log)]
    by_proxy = proxy_failures(errors, since)
    refused = [{"url": f["url"], "reason": f["reason"]} for f in by_proxy if f["kind"] == "refused"]
    # The page itself is wget's first transfer; requisites come after it.
    first_saved = SAVED_RE.search(log)
    first_error = ERROR_RE.search(log)
    main_err = None
    if first_error and (first_saved is None or first_error.start() < first_saved.start()):
        main_err = errors[0]
    final_url = main_err["url"] if main_err else (first_saved.group(1) if first_saved else url)
    main_refused = next((f for f in by_proxy if main_err and f["url"] == main_err["url"]), None)
    main_html = None if main_refused else find_main_html(url, first_saved, since)
    http_status = main_err["status"] if main_err else (200 if first_saved else None)
    warc = f"{warc_rel}.warc.gz" if warc_rel and os.path.isfile(f"{warc_rel}.warc.gz") else None
    original = f"{main_html}.orig" if main_html else None
    if original and not (os.path.isfile(original) and os.path.getmtime(original) >= since):
        original = main_html  # wget converted no link: the page is as served
    info = {
        "url": url, "final_url": final_url,
        "main_html": f"wget/{main_html}" if main_html else None,
        "original_html": f"wget/{original}" if original else None,
        "http_status": http_status, "exit_code": returncode,
        "errors": errors, "refused": refused, "warc": f"wget/{warc}" if warc else None,
        "seconds": round(secs, 3),
    }
    if main_refused:
        if warc:
            os.remove(warc)  # it holds the proxy's refusal, nothing of the target
            info["warc"] = None
        write_info(info)
        where = url if main_refused["url"] == url else f"{url} (redirected to {main_refused['url']})"
        return fail(f"{where}: {main_refused['reason']}", **info)
    if main_html is None:
        tail = [ln for ln in log.strip().splitlines() if ln.strip()][-3:]
        reason = " ".join(tail) or f"wget exited {returncode} and saved nothing"
        if warc and returncode != 0:
            os.remove(warc)  # a WARC with no response in it is only noise
            info["warc"] = None
        write_info(info)
        return fail(f"wget exited {returncode}: {reason}"[:1000], **info)
    if main_err:
        note = f"server answered {main_err['status']} {main_err['reason']}; error page saved"
    elif returncode != 0:
        note = f"page saved; wget exited {returncode} ({len(errors)} requisite errors)"
        if refused:
            note += f", {len(refused)} refused by the egress policy"
    else:
        note = "page saved"
    info["note"] = note
    write_info(info)
    if main_err:
        emit({"type": "ArchiveResult", "status": "failed", "output_str": f"wget/{main_html}",
              "output_json": info,
              "error": f"HTTP {main_err['status']} {main_err['reason']} (error page and WARC kept)"})
        return 0
    emit({"type": "ArchiveResult", "status": "succeeded", "output_str": f"wget/{main_html}",
          "output_json": info})
    return 0


if __name__ == "__main__":
    sys.exit(main())
