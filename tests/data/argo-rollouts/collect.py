"""Rebuilds this folder's corpus from a git snapshot of argoproj/argo-rollouts.

    python tests/data/argo-rollouts/collect.py /path/to/argo-rollouts.git [REV]

Why: Argo Rollouts' own examples and documentation are the manifests people will bring to
Coalmine; keeping them as test data (tests/unit/test_argo_corpus.py) shows what Coalmine accepts
and refuses of them, and this script lets the corpus be refreshed from a newer snapshot.

It reads the snapshot with `git --git-dir=... show/ls-tree` (no work tree needed) and writes:
- examples/<path>: every `examples/**/*.yaml` file that parses as YAML and holds a Rollout,
  AnalysisTemplate or ClusterAnalysisTemplate (argoproj.io) document, byte for byte;
- docs/features/<page>/<n>.yaml (the Markdown file's path without .md): its n-th ```yaml block
  (counting from 1 among the page's yaml blocks), for `docs/features/**/*.md`, when the block
  holds such a document, with the fence's own indentation removed (blocks inside tabs are
  indented) and nothing else changed;
- LICENSE (Argo's), NOTICE.md (attribution) and INDEX.md (counts).
Blocks that are not valid YAML (most elide parts with `...`), or whose documents have no
apiVersion/kind (fragments), are skipped and counted in INDEX.md. Rerun regen_expected.py after.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
UPSTREAM = "https://github.com/argoproj/argo-rollouts"
CORPUS_KINDS = ("Rollout", "AnalysisTemplate", "ClusterAnalysisTemplate")
FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*([\w+-]*)")
NOT_ROUTERS = {"managedRoutes", "maxTrafficWeight"}


def git(git_dir: str, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", git_dir, *args], capture_output=True, text=True, check=True
    ).stdout


def is_corpus_doc(doc: Any) -> bool:
    return (isinstance(doc, dict) and doc.get("kind") in CORPUS_KINDS
            and str(doc.get("apiVersion", "")).startswith("argoproj.io/"))


def load(text: str) -> list[Any] | None:
    """The documents of `text`, or None when it is not valid YAML."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError:
        return None


def yaml_blocks(markdown: str) -> list[str]:
    """The ```yaml / ```yml blocks of a Markdown page, fence indentation removed."""
    blocks: list[str] = []
    lines = markdown.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, language = match.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if language.lower() in ("yaml", "yml"):
            body = lines[i + 1:end]
            blocks.append("".join(
                line[len(indent):] if line.startswith(indent) else line.lstrip(" \t")
                for line in body))
        i = end + 1
    return blocks


def collect(git_dir: str, rev: str) -> dict[str, Any]:
    """Writes the corpus files; returns what INDEX.md and NOTICE.md report."""
    for folder in ("examples", "docs"):
        shutil.rmtree(HERE / folder, ignore_errors=True)
    paths = git(git_dir, "ls-tree", "-r", "--name-only", rev).splitlines()
    skipped: Counter[str] = Counter()
    saved: list[str] = []
    for path in paths:
        if path.startswith("examples/") and path.endswith(".yaml"):
            text = git(git_dir, "show", f"{rev}:{path}")
            docs = load(text)
            if docs is None:
                skipped[f"examples: not valid YAML ({path})"] += 1
            elif any(map(is_corpus_doc, docs)):
                write(HERE / path, text)
                saved.append(path)
    for path in paths:
        if not (path.startswith("docs/features/") and path.endswith(".md")):
            continue
        for n, block in enumerate(yaml_blocks(git(git_dir, "show", f"{rev}:{path}")), start=1):
            docs = load(block)
            if docs is None:
                skipped["docs blocks: not valid YAML"] += 1
            elif not docs or not all(isinstance(d, dict) and "apiVersion" in d and "kind" in d
                                     for d in docs):
                skipped["docs blocks: fragments without apiVersion/kind"] += 1
            elif not any(map(is_corpus_doc, docs)):
                skipped["docs blocks: only other kinds"] += 1
            else:
                target = f"{path.removesuffix('.md')}/{n}.yaml"  # docs/features/...
                write(HERE / target, block)
                saved.append(target)
    (HERE / "LICENSE").write_text(git(git_dir, "show", f"{rev}:LICENSE"))
    sha, date = git(git_dir, "log", "-1", "--format=%H %cI", rev).split()
    return {"sha": sha, "date": date, "saved": saved, "skipped": skipped}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def strategy_facts(rollout: dict[str, Any]) -> tuple[str, list[str]]:
    """("canary, trafficRouting: istio" or "blueGreen" ..., the step kinds it uses)."""
    spec = rollout.get("spec") or {}
    strategy = spec.get("strategy") or {}
    both = "blueGreen and " if "blueGreen" in strategy else ""  # the spec page shows both
    if "canary" not in strategy:
        return ("blueGreen" if both else f"other ({', '.join(sorted(strategy)) or 'no strategy'})"), []
    canary = strategy["canary"] or {}
    steps = [key for step in canary.get("steps") or [] if isinstance(step, dict) for key in step]
    routing = canary.get("trafficRouting")
    if not routing:
        return f"{both}canary without trafficRouting", steps
    routers = []
    for key, value in sorted(routing.items()):
        if key == "plugins":
            routers += [f"plugins/{name}" for name in sorted(value or {})]
        elif key not in NOT_ROUTERS:
            routers.append(key)
    shown = " + ".join(routers) or f"no router ({', '.join(sorted(routing))} only)"
    return f"{both}canary, trafficRouting: {shown}", steps


def index_text(facts: dict[str, Any]) -> str:
    kinds: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    for rel in facts["saved"]:
        for doc in load((HERE / rel).read_text()) or []:
            kind = doc.get("kind") if is_corpus_doc(doc) else f"{doc.get('kind')} (other)"
            kinds[kind] += 1
            if kind == "Rollout":
                strategy, used = strategy_facts(doc)
                strategies[strategy] += 1
                steps.update(used)
    examples = sum(rel.startswith("examples/") for rel in facts["saved"])

    def table(counter: Counter[str], what: str) -> str:
        rows = "".join(f"| {name} | {count} |\n" for name, count in sorted(counter.items()))
        return f"| {what} | count |\n|---|---|\n{rows}"

    return (
        "# Argo Rollouts corpus: what is here\n\n"
        f"Made by collect.py from argoproj/argo-rollouts @ {facts['sha'][:12]} "
        f"({facts['date']}); see NOTICE.md. Expectations: expected.yaml (regen_expected.py).\n\n"
        f"Files: {len(facts['saved'])} ({examples} from examples/, "
        f"{len(facts['saved']) - examples} YAML blocks of docs/features/; a block's file "
        "name is its number among the page's yaml blocks, from 1).\n\n"
        "## Skipped\n\n" + table(facts["skipped"], "what") +
        "\n## Documents by kind\n\n" + table(kinds, "kind") +
        "\n## Rollout strategies\n\n" + table(strategies, "strategy") +
        "\n## Canary steps by kind (number of steps)\n\n" + table(steps, "step") +
        "\nRegenerate with `python tests/data/argo-rollouts/collect.py <argo-rollouts git dir>`.\n"
    )


NOTICE = """# Notice: third-party material

The files under `examples/` and `docs/` in this folder come from **Argo Rollouts**
({upstream}), written by the Argo Rollouts authors and licensed under the Apache License,
Version 2.0. A copy of that license is in `LICENSE` beside this file (also at
{upstream}/blob/{sha}/LICENSE and https://www.apache.org/licenses/LICENSE-2.0).
The project ships no NOTICE file of its own.

- Project: Argo Rollouts, {upstream}
- Commit: {sha} (committed {date}); collected on {today}
- License: Apache-2.0
- `examples/<path>`: files of the project's `examples/` folder, copied unmodified.
- `docs/<page>/<n>.yaml`: the n-th YAML code block of the project's `docs/<page>.md`, copied
  unmodified except that the indentation of the block's fence is removed (blocks inside
  tabs are indented in the Markdown source).

They are kept as test data only (tests/unit/test_argo_corpus.py), to check what Coalmine
makes of real Argo Rollouts manifests. Coalmine's own files in this folder (`collect.py`,
`regen_expected.py`, `expected.yaml`, `INDEX.md`, this notice) are not part of Argo Rollouts.
"""


def main() -> None:
    git_dir, rev = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "HEAD")
    facts = collect(git_dir, rev)
    (HERE / "NOTICE.md").write_text(
        NOTICE.format(upstream=UPSTREAM, today=datetime.now(UTC).date().isoformat(), **facts))
    (HERE / "INDEX.md").write_text(index_text(facts))
    print(f"{len(facts['saved'])} files; skipped: {dict(facts['skipped'])}")


if __name__ == "__main__":
    main()
