"""`coalmine demo`: the main job end to end on this machine, with no outside service.

A newcomer has no forge and no cluster at hand, so the demo brings both: the simulators of
bot/sim (a Kubernetes API, GitHub's REST API, a GitOps repository over git HTTP, an exporter
with a Prometheus-compatible query endpoint) on free loopback ports, and the real bot over them
in this process (the web app served over HTTP, jobs on the embedded queue, no Redis). It merges
a first deploy, a good release (promoted) and a bad one (aborted, revert PR opened), narrating
each step from the rollout store and the commit statuses and printing the PR comment as it
changes, while the dashboard is served. Everything it started is stopped, and its temporary
directory removed, on the way out, Ctrl-C included.

The metrics source is the exporter's own query endpoint, not a Prometheus: nothing to install,
and an analysis reads the release's success ratio at once instead of after scrapes and a rate
window (tests/e2e/test_canary.py runs the same analysis against a real Prometheus).
"""

from __future__ import annotations

import difflib
import logging
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx
from werkzeug.serving import BaseWSGIServer, make_server

from bot import services
from bot.config import load_settings
from bot.rollout.store import RolloutStore, rollout_key
from bot.sim import payloads
from bot.sim.exporter import Exporter
from bot.sim.github import FakeGitHub
from bot.sim.gitserver import BareRemote, GitHttpServer, make_remote
from bot.sim.kube import FakeKube
from bot.wsgi import app_for

REPO = "acme/gitops"
NAMESPACE = "shop"
BOT_LOGIN = "coalmine-bot"
TRACK = "web-canary"  # the exporter's track the analysis reads: the canary's traffic
WAIT_S = 120.0  # the longest any one stage may take before the demo gives up
POLL_S = 0.2
T = TypeVar("T")

CONFIG = f"""# The demo's GitOps repository: one app rolled out as a canary.
apps:
  - name: web
    path: deploy/web
    namespace: {NAMESPACE}
    healthTimeoutSeconds: 30
    canary:
      workload: Deployment/web
      progressDeadlineSeconds: 30
      steps:
        - setWeight: 25
        - pause: {{duration: 2}}
        - analysis:
            templates: [{{templateName: success-rate}}]
            args: [{{name: track, value: {TRACK}}}]
        - setWeight: 50
        - pause: {{duration: 2}}
"""

ANALYSIS_TEMPLATE = """apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata:
  name: success-rate
spec:
  args:
    - name: track
  metrics:
    - name: success-rate
      interval: 1s
      count: 3
      successCondition: result[0] >= 0.95
      failureCondition: result[0] < 0.90
      provider:
        prometheus:
          query: http_requests:success_ratio{track="{{args.track}}"}
"""

SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def deployment(version: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 4
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: registry.example/web:{version}
          ports: [{{containerPort: 8080}}]
"""


INITIAL_FILES = {"README.md": "# acme/gitops\n\nWhat runs in the shop namespace.\n"}
FIRST_DEPLOY = {
    ".coalmine.yaml": CONFIG,
    "deploy/web/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n",
    "deploy/web/deployment.yaml": deployment("1.0"),
    "deploy/web/service.yaml": SERVICE,
    "deploy/web/analysis.yaml": ANALYSIS_TEMPLATE,
}


class DemoFailed(Exception):
    """A stage did not reach its end in time; the message says which."""


class Narrator:
    """Prints what happens, each line stamped with the seconds since the demo began."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.began = time.monotonic()

    def say(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.began:5.1f}s]"
        for line in text.splitlines() or [""]:
            print(f"{stamp} {line}", file=self.out, flush=True)

    def block(self, title: str, body: str) -> None:
        print(f"\n    ┌─ {title}", file=self.out)
        for line in body.rstrip().splitlines():
            print(f"    │ {line}", file=self.out)
        print("    └─\n", file=self.out, flush=True)


class _LateApp:
    """The WSGI app of a server bound before the app exists (the app needs the server's URL)."""

    def __init__(self) -> None:
        self.app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None
        return self.app(environ, start_response)


class World:
    """The simulators, the bot over them, and how the demo reads what happens."""

    def __init__(self, stack: ExitStack, root: Path) -> None:
        self.token = "ghp_demo" + secrets.token_hex(16)
        self.secret = secrets.token_hex(16)
        self.dashboard_token = secrets.token_urlsafe(32)
        self.kube = FakeKube(ready_delay=0.3)
        self.kube.start()
        stack.callback(self.kube.stop)
        self.github = FakeGitHub().start()
        stack.callback(self.github.stop)
        self.github.add_repo(REPO)
        self.github.add_token(self.token, BOT_LOGIN)
        self.exporter = Exporter().start()
        stack.callback(self.exporter.stop)
        self.remote: BareRemote = make_remote(root / "repos", "gitops", INITIAL_FILES)
        self.git_http = stack.enter_context(
            GitHttpServer(root / "repos", username="x-access-token", password=self.token))
        late = _LateApp()
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, late, threaded=True)
        stack.callback(self.server.server_close)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        settings = load_settings({
            "GITHUB_WEBHOOK_SECRET": self.secret,
            "GITHUB_TOKEN": self.token,
            "GITHUB_API_URL": self.github.url,
            "GITHUB_BOT_LOGIN": BOT_LOGIN,
            "KUBECONFIG": str(self.kube.write_kubeconfig(root / "kubeconfig")),
            "PROMETHEUS_URL": self.exporter.query_url,
            "COALMINE_DATA_DIR": str(root / "data"),
            "COALMINE_REPOS": f"{REPO}={NAMESPACE}",
            "COALMINE_PUBLIC_URL": self.url,
            "COALMINE_DASHBOARD_TOKEN": self.dashboard_token,
        })
        self.services = services.install(services.build(settings))
        stack.callback(services.uninstall)
        stack.callback(self.services.queue.stop)  # the embedded queue's thread
        late.app = app_for(self.services)
        serving = threading.Thread(target=self.server.serve_forever, name="coalmine-demo-web",
                                   kwargs={"poll_interval": 0.1}, daemon=True)
        serving.start()
        stack.callback(self._stop_server, serving)
        self.store = RolloutStore(self.services.redis)

    def _stop_server(self, serving: threading.Thread) -> None:
        self.server.shutdown()  # its socket is closed next (registered before)
        serving.join(timeout=10)

    def merge(self, files: dict[str, str | None], title: str) -> tuple[int, str]:
        """A PR of `files` merged on the forge, and its webhook delivered; (number, sha)."""
        branch = f"pr-{self.remote.last_pr_number + 1}"
        sha = self.remote.merge_pr(branch, files, title)
        number = self.github.add_pull(REPO, head=branch, title=title, state="merged",
                                      merge_sha=sha)
        body = payloads.dumps(payloads.github_pr_merged(
            full_name=REPO, clone_url=self.git_http.url(self.remote, credentials=False),
            number=number, merge_sha=sha, head=branch, title=title))
        headers = payloads.github_headers(body, self.secret, "pull_request")
        answer = httpx.post(f"{self.url}/webhooks/github", content=body, headers=headers,
                            timeout=30)
        if answer.status_code != 202:
            raise DemoFailed(f"the webhook of #{number} was answered {answer.status_code}: "
                             f"{answer.text[:200]}")
        return number, sha

    def status(self, sha: str) -> dict[str, Any] | None:
        return self.github.latest_statuses(REPO, sha).get("coalmine/web")

    def comment(self, number: int) -> str | None:
        ours = [c["body"] for c in self.github.comments(REPO, number)
                if c["user"]["login"] == BOT_LOGIN]
        return ours[0] if ours else None

    def revert_pr(self, sha: str) -> dict[str, Any] | None:
        branch = f"coalmine/revert-{sha[:7]}"
        found = [p for p in self.github.pulls(REPO) if p["head"]["ref"] == branch]
        return found[0] if found else None

    def replicas(self, name: str) -> int | None:
        obj = self.kube.get_object("apps/v1", "Deployment", NAMESPACE, name)
        return obj["spec"]["replicas"] if obj else None


class Watch:
    """Narrates one merge: new rollout history, new status states, comment edits."""

    def __init__(self, world: World, narrator: Narrator, number: int, sha: str) -> None:
        self.world, self.narrator, self.number, self.sha = world, narrator, number, sha
        self.history = 0
        self.statuses = 0
        self.comment: str | None = None
        self.pods: tuple[int | None, int | None] | None = None

    def poll(self) -> None:
        say = self.narrator.say
        record = self.world.store.load(rollout_key("github", REPO, "web"))
        if record is not None and record.state.revision == self.sha:
            for entry in record.state.history[self.history:]:
                say(f"rollout  {entry.message}")
            self.history = len(record.state.history)
            pods = (self.world.replicas("web"), self.world.replicas("web-canary"))
            if pods != self.pods:
                stable, canary = pods
                say(f"cluster  Deployment web: {stable} replica(s), "
                    f"web-canary: {canary if canary is not None else 'none'}")
                self.pods = pods
        posted = [s for s in self.world.github.statuses(REPO, self.sha)
                  if s["context"].startswith("coalmine/")]
        for status in posted[self.statuses:]:
            say(f"status   {status['context']}: {status['state']} - {status['description']}")
        self.statuses = len(posted)
        body = self.world.comment(self.number)
        if body is not None and body != self.comment:
            if self.comment is None:
                self.narrator.block(f"PR #{self.number} comment (new)", body)
            else:
                changed = [line[2:] for line in difflib.ndiff(self.comment.splitlines(),
                                                               body.splitlines())
                           if line.startswith("+ ")]
                self.narrator.block(f"PR #{self.number} comment (edited; new lines)",
                                    "\n".join(changed) or "(lines removed only)")
            self.comment = body

    def until(self, done: Callable[[], T | None], what: str) -> T:
        deadline = time.monotonic() + WAIT_S
        while True:
            self.poll()
            value = done()
            if value:
                self.poll()
                return value
            if time.monotonic() > deadline:
                raise DemoFailed(f"{what}: not within {WAIT_S:g}s")
            time.sleep(POLL_S)


def _final(world: World, sha: str) -> Callable[[], dict[str, Any] | None]:
    def final() -> dict[str, Any] | None:
        status = world.status(sha)
        return status if status and status["state"] != "pending" else None

    return final


def _mentions(world: World, number: int, needle: str) -> Callable[[], bool]:
    return lambda: needle in (world.comment(number) or "")


def _release(world: World, narrator: Narrator, files: dict[str, str | None], title: str,
             expected: str, description: str | None = None) -> tuple[Watch, int, str]:
    """Merge `files` as PR `title` and watch it until its status is final, which must be
    `expected` (and say `description`, when given); returns the watch, PR number and sha."""
    number, sha = world.merge(files, title)
    narrator.say(f"     merged PR #{number} at {sha[:7]}; webhook accepted")
    watch = Watch(world, narrator, number, sha)
    status = watch.until(_final(world, sha), title)
    if status["state"] != expected or description not in (None, status["description"]):
        raise DemoFailed(f"{title} ended {status['state']}: {status['description']}")
    return watch, number, sha


def run_story(world: World, narrator: Narrator) -> None:
    """The three merges, each watched to its end; raises DemoFailed when one goes astray."""
    say = narrator.say
    say("1/3  first deploy: .coalmine.yaml, Deployment web (registry.example/web:1.0, "
        "4 replicas), Service, AnalysisTemplate success-rate")
    _release(world, narrator, FIRST_DEPLOY, "Deploy web 1.0", "success")

    print(file=narrator.out)
    say("2/3  a good release: web 2.0, whose canary answers every request "
        f"(exporter track {TRACK}: 0% errors)")
    world.exporter.set_traffic(TRACK, requests_per_second=50, error_ratio=0.0)
    _release(world, narrator, {"deploy/web/deployment.yaml": deployment("2.0")}, "Web 2.0",
             "success", "promoted")
    say("     promoted: Deployment web now runs registry.example/web:2.0")

    print(file=narrator.out)
    say(f"3/3  a bad release: web 3.0, whose canary fails a quarter of its requests "
        f"(exporter track {TRACK}: 25% errors)")
    world.exporter.set_traffic(TRACK, requests_per_second=50, error_ratio=0.25)
    watch, number, sha = _release(
        world, narrator, {"deploy/web/deployment.yaml": deployment("3.0")}, "Web 3.0", "failure")
    say("     aborted: the stable version (web 2.0) serves every request again")
    revert = watch.until(lambda: world.revert_pr(sha), "the revert PR")
    say(f"     revert PR #{revert['number']} opened: {revert['title']!r} "
        f"from {revert['head']['ref']}")
    watch.until(_mentions(world, number, "Revert PR opened"), "the comment naming the revert PR")
    narrator.block(f"PR #{number} comment (final)", world.comment(number) or "")


@contextmanager
def _terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM ends the demo like Ctrl-C does: through the clean-up."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _bot_log(path: Path) -> Iterator[None]:
    """The bot's own log lines go to `path`, not between the narration's."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    kept = (root.handlers[:], root.level)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
        handler.close()


def _serve_until_interrupted() -> None:
    """--keep: the story is over and went well, so Ctrl-C (or SIGTERM) ends it with 0."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return


def run(keep: bool = False, out: TextIO = sys.stdout) -> int:
    """The demo; 0 when the story ran to its end, 1 when a stage failed, 130 on Ctrl-C."""
    narrator = Narrator(out)
    root = Path(tempfile.mkdtemp(prefix="coalmine-demo-"))
    log_path = root / "bot.log"
    try:
        with _terminated_as_interrupt(), _bot_log(log_path), ExitStack() as stack:
            narrator.say(f"coalmine demo: simulators and the bot starting (files in {root})")
            world = World(stack, root)
            narrator.say(f"kubernetes API (simulated)  {world.kube.url}")
            narrator.say(f"GitHub API (simulated)      {world.github.url}")
            narrator.say(f"git over HTTP               {world.git_http.base_url}")
            narrator.say(f"metrics (exporter, query)   {world.exporter.query_url}")
            narrator.say(f"bot (webhooks, dashboard)   {world.url}")
            narrator.say(f"dashboard: {world.url}/dashboard/  token: {world.dashboard_token}")
            print(file=out)
            try:
                run_story(world, narrator)
            except DemoFailed as failure:
                narrator.say(f"demo failed: {failure}")
                tail = log_path.read_text(errors="replace").splitlines()[-40:]
                narrator.block("the bot's last log lines", "\n".join(tail))
                return 1
            print(file=out)
            narrator.say("done: web 2.0 was promoted; web 3.0 was aborted and its revert PR "
                         "opened")
            if keep:
                narrator.say(f"--keep: still serving; dashboard {world.url}/dashboard/ "
                             f"(token {world.dashboard_token}); Ctrl-C to stop")
                _serve_until_interrupted()
            narrator.say("stopping the bot and the simulators")
        return 0
    except KeyboardInterrupt:
        print("\ncoalmine demo: interrupted; everything it started is stopped", file=out,
              flush=True)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
