"""A private Request Tracker 5 for the live tests: Debian's ``request-tracker5``, SQLite, standalone server on loopback.

Nothing of the system's RT is touched: each server gets its own directory with its own site
configuration (``RT_SITE_CONFIG``, ``RT_SITE_CONFIG_DIR``), database, Mason cache and log, and
runs as the calling user. A pristine database is built once with ``rt-setup-database-5`` and
kept in a cache directory (keyed by RT's version); each server starts from a copy of it.

The server's time zone is set to one far from UTC on purpose: RT reads the dates of TicketSQL
in the user's (or else the server's) time zone, and a connector that forgets it must fail.

As a command, for a developer or the demo::

    python -m tests.rt_server start [--port 8095] [--dir DIR] [--seed N]   # prints the URL, the user and the password
    python -m tests.rt_server stop [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

RT_HOME = Path("/usr/share/request-tracker5")
RT_SERVER = RT_HOME / "libexec" / "rt-server"
RT_SETUP = Path("/usr/sbin/rt-setup-database-5")
RT_GENERATED = RT_HOME / "lib" / "RT" / "Generated.pm"
USER, PASSWORD = "root", "gapbridge-rt-pw"
# five hours west of UTC in winter: a bookmark read as local time would be off by hours, not seconds
TIMEZONE = "America/New_York"
# RT checks the password (or token) of every REST2 request with bcrypt: at RT's cost of 12 that is about 0.25 s a
# request, most of the time a sync or a seeding takes; a private server on loopback needs no such cost
BCRYPT_COST = 4
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gapbridge" / "rt"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "gapbridge-rt"


class RTUnavailable(Exception):
    """RT is not installed here, or would not start: the reason says which."""


def missing() -> str | None:
    """Why no RT can be started on this machine; None when it can."""
    for path in (RT_SERVER, RT_SETUP, RT_GENERATED):
        if not path.exists():
            return (f"{path} is missing: install Debian's request-tracker5 (apt-get install request-tracker5 rt5-db-sqlite "
                    "rt5-standalone) or point GAPBRIDGE_RT_URL at a running RT 5")
    return None


def rt_version() -> str:
    for line in RT_GENERATED.read_text().splitlines():
        if line.startswith("our $VERSION"):
            return line.split("'")[1]
    return "unknown"


def site_config(workdir: Path, port: int, timezone: str) -> str:
    """RT_SiteConfig.pm of one private server (Perl)."""
    return f"""# written by tests/rt_server.py: a private RT for GapBridge's tests
Set($rtname, 'gapbridge-test');
Set($Organization, 'gapbridge.test');
Set($CorrespondAddress, 'rt@gapbridge.test');
Set($CommentAddress, 'rt-comment@gapbridge.test');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{workdir}/rt.db');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {port});
Set($WebPath, '');
Set($WebBaseURL, 'http://127.0.0.1:{port}');
Set($CanonicalizeRedirectURLs, 0);
Set($Timezone, '{timezone}');
Set($BcryptCost, {BCRYPT_COST});
Set($LogToSyslog, undef);
Set($LogToSTDERR, 'error');
Set($LogToFile, 'warning');
Set($LogDir, '{workdir}');
Set($LogToFileNamed, 'rt.log');
# scrips send mail on create and comment: drop it (there is no mail server)
Set($MailCommand, sub {{ 1 }});
$RT::VarPath = '{workdir}/var';
$RT::MasonDataDir = '{workdir}/mason';
$RT::MasonSessionDir = '{workdir}/sessions';
1;
"""


def _env(config: Path) -> dict[str, str]:
    # RT_SITE_CONFIG_DIR replaces /etc/request-tracker5/RT_SiteConfig.d (root-only files, the system's database)
    return {**os.environ, "RT_SITE_CONFIG": str(config), "RT_SITE_CONFIG_DIR": str(config.parent / "RT_SiteConfig.d")}


def _prepare(workdir: Path, port: int, timezone: str) -> Path:
    for sub in ("var", "mason", "sessions", "RT_SiteConfig.d"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    config = workdir / "RT_SiteConfig.pm"
    config.write_text(site_config(workdir, port, timezone))
    return config


def pristine_database() -> Path:
    """A freshly initialised RT database (root's password: PASSWORD), built once per RT version and bcrypt cost."""
    # the cost is in the name: RT raises a stored hash to its $BcryptCost, never lowers one
    target = CACHE / f"rt-{rt_version()}-bcrypt{BCRYPT_COST}.db"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gapbridge-rt-init-") as tmp:
        work = Path(tmp)
        config = _prepare(work, 1, "UTC")
        secret = work / "root-password"
        secret.write_text(PASSWORD + "\n")
        done = subprocess.run([str(RT_SETUP), "--action", "init", "--root-password-file", str(secret)], env=_env(config),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not (work / "rt.db").exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise RTUnavailable(f"rt-setup-database-5 failed (exit {done.returncode}):\n" + "\n".join(tail))
        partial = target.with_suffix(".part")
        shutil.copyfile(work / "rt.db", partial)
        partial.replace(target)  # another session building it at once ends with the same file
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RTServer:
    """One running private RT: its URL, credentials, process and directory."""

    url: str
    username: str
    password: str
    workdir: Path
    pid: int | None  # None for a server this module did not start
    process: subprocess.Popen[bytes] | None = None

    def rest(self, path: str) -> str:
        return f"{self.url}/REST/2.0/{path.lstrip('/')}"

    def create_token(self, description: str = "GapBridge tests") -> str:
        """A new REST2 auth token of the server's user, made with RT's own library (REST2 cannot make one)."""
        # the token reaches perl on stdin's other end: printed once, never put on a command line
        script = ("use lib '/usr/share/request-tracker5/lib'; use RT; RT::LoadConfig(); RT::Init();"
                  "my $user = RT::User->new(RT->SystemUser); $user->Load($ARGV[0]) or die 'no such user';"
                  "my $t = RT::AuthToken->new(RT::CurrentUser->new($user));"
                  "my ($ok, $msg, $auth) = $t->Create(Owner => $user->Id, Description => $ARGV[1]);"
                  "die $msg unless $ok; print $auth;")
        done = subprocess.run(["perl", "-e", script, self.username, description], env=_env(self.workdir / "RT_SiteConfig.pm"),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or not done.stdout.strip():
            raise RTUnavailable(f"could not make an RT auth token: {done.stderr.strip()[-500:]}")
        return done.stdout.strip()

    def stop(self) -> None:
        if self.pid is None:
            return
        _stop_group(self.pid)
        if self.process is not None:
            self.process.wait(timeout=10)  # reaped: no zombie, and Popen has nothing left to warn about
            self.process = None
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "rt-server.pid").unlink()


def _stop_group(pid: int, wait: float = 10.0) -> None:
    """TERM the server's process group (the Starlet master and its workers), then KILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        else:
            continue
        return


def answers(url: str, username: str, password: str) -> bool:
    try:
        return requests.get(f"{url}/REST/2.0/rt", auth=(username, password), timeout=5).status_code == 200
    except requests.RequestException:
        return False


def start(workdir: Path | None = None, *, port: int | None = None, timezone: str = TIMEZONE, wait: float = 120.0) -> RTServer:
    """Start a private RT from a copy of the pristine database; RTUnavailable says why it could not."""
    reason = missing()
    if reason:
        raise RTUnavailable(reason)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="gapbridge-rt-"))
    port = port or free_port()
    database = pristine_database()
    config = _prepare(workdir, port, timezone)
    shutil.copyfile(database, workdir / "rt.db")
    log = (workdir / "rt-server.out").open("ab")
    # its own session and process group, so stop() ends the master and every worker it forked, and nothing else
    process = subprocess.Popen([str(RT_SERVER), "--server", "Starlet", "--host", "127.0.0.1", "--port", str(port),
                                "--max-workers", "2"], env=_env(config), cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    (workdir / "rt-server.pid").write_text(str(process.pid))
    server = RTServer(f"http://127.0.0.1:{port}", USER, PASSWORD, workdir, process.pid, process)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.pid, server.process = None, None
            raise RTUnavailable(f"rt-server exited with status {process.returncode}:\n{_tail(workdir)}")
        if answers(server.url, USER, PASSWORD):
            return server
        time.sleep(0.5)
    server.stop()
    raise RTUnavailable(f"rt-server did not answer REST2 within {wait:.0f} s:\n{_tail(workdir)}")


def _tail(workdir: Path, lines: int = 20) -> str:
    texts = []
    for name in ("rt-server.out", "rt.log"):
        path = workdir / name
        if path.exists():
            texts += path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(texts)


def stop(workdir: Path) -> bool:
    """Stop the server whose pid file is in ``workdir``; False if none ran."""
    pidfile = workdir / "rt-server.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    _stop_group(pid)
    pidfile.unlink(missing_ok=True)
    return True


def seed_demo(url: str, size: int) -> int:
    """Seed the server at ``url`` with ``size`` demo incidents (``demo_itsm.rt_seed``, as ``gapbridge demo --tool rt``)."""
    from demo_itsm import rt_seed

    def show(text: str) -> None:
        print(f"\r  {text}", end="", file=sys.stderr, flush=True)

    try:
        result = rt_seed.seed(url, {"method": "basic", "username": USER, "password": PASSWORD}, size, progress=show)
    except rt_seed.SeedError as exc:
        print(f"\nseeding failed: {exc}", file=sys.stderr)
        return 1
    if result.created:
        print(file=sys.stderr)
    print(rt_seed.describe(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rt_server", description="a private RT 5 on loopback for GapBridge")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"its directory (default {DEFAULT_DIR})")
    parser.add_argument("--timezone", default=TIMEZONE, help=f"RT's $Timezone (default {TIMEZONE})")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="then seed it with N demo incidents, as `gapbridge demo --tool rt` does (unless its queue "
                             "'GapBridge Demo' holds tickets already)")
    args = parser.parse_args(argv)
    if args.action == "stop":
        print("stopped" if stop(args.dir) else f"no server recorded in {args.dir}")
        return 0
    if args.seed is not None and args.seed < 1:
        parser.error("--seed: at least 1 incident")
    url = f"http://127.0.0.1:{args.port}"
    if (args.dir / "rt-server.pid").exists() and answers(url, USER, PASSWORD):
        print(f"already running: {url} (user {USER}, password {PASSWORD})")
        return seed_demo(url, args.seed) if args.seed else 0
    started = time.monotonic()
    try:
        server = start(args.dir, port=args.port, timezone=args.timezone)
    except RTUnavailable as exc:
        print(f"RT could not be started: {exc}", file=sys.stderr)
        return 1
    print(f"RT 5 answers at {server.url} (user {server.username}, password {server.password}; "
          f"started in {time.monotonic() - started:.1f} s; stop: python -m tests.rt_server stop --dir {args.dir})")
    print(f"export GAPBRIDGE_RT_URL={server.url} GAPBRIDGE_RT_USER={server.username} GAPBRIDGE_RT_PASSWORD={server.password}")
    return seed_demo(server.url, args.seed) if args.seed else 0


if __name__ == "__main__":
    raise SystemExit(main())
