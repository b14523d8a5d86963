"""A loopback stand-in for the Hugging Face Hub, enough of its URL layout for `huggingface_hub`
and `hearth pull`:

    GET  /api/models?search=&filter=gguf&sort=&limit=   the search: repositories whose id holds
                                                        `search`, with a .gguf file for
                                                        filter=gguf, sorted by `meta` (descending)
    GET  /api/models/{owner}/{repo}[/revision/{rev}]   model info; with ?blobs=true the siblings
                                                        carry size, blobId and lfs.sha256
    HEAD /{owner}/{repo}/resolve/{rev}/{file}           the headers huggingface_hub reads:
    GET  /{owner}/{repo}/resolve/{rev}/{file}           ETag/X-Linked-Etag, X-Repo-Commit,
                                                        X-Linked-Size, Content-Length; Range → 206

Faults, per file name: `cut_after[name] = n` sends n bytes of the body and closes the connection
(once per `cuts[name]` count, default 1); `corrupt.add(name)` serves bytes that differ from the
published sha256; `failing = 503` answers every request with that status. `meta[repo]` holds what
the search reports of a repository (`downloads`, `likes`, `trendingScore`, `lastModified`,
`gguf: {"total": parameters}`). Every request is recorded in `requests`.

Revisions: a repository's files are at commit `commits[repo]` (default COMMIT);
`new_revision(repo, {name: data})` makes a new commit with those files changed (or added) and
returns its sha. The model info and downloads at an earlier commit (`/revision/{sha}`,
`/resolve/{sha}/`) serve that commit's files. `failing_repos[repo] = status` answers that
repository's model info with that status (a hub that fails for one model only).

Like a hostile mirror, it lists and serves any name `add_file` is given (`../../x.gguf`,
`/tmp/x.gguf`). A client normalises `..` out of the URL, so a name that climbs out of its
repository is also served at any path ending in its last part.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from support.gguf_files import write_gguf

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubFileData:
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()


@dataclass
class FakeHub:
    host: str = "127.0.0.1"
    port: int = 0
    repos: dict[str, dict[str, HubFileData]] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)
    cuts: dict[str, int] = field(default_factory=dict)
    corrupt: set[str] = field(default_factory=set)
    meta: dict[str, dict[str, object]] = field(default_factory=dict)
    failing: int | None = None
    requests: list[Seen] = field(default_factory=list)
    commits: dict[str, str] = field(default_factory=dict)
    snapshots: dict[tuple[str, str], dict[str, HubFileData]] = field(default_factory=dict)
    failing_repos: dict[str, int] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add_file(self, repo_id: str, name: str, data: bytes | Path) -> None:
        content = data.read_bytes() if isinstance(data, Path) else data
        self.repos.setdefault(repo_id, {})[name] = HubFileData(content)

    def commit_of(self, repo_id: str) -> str:
        return self.commits.get(repo_id, COMMIT)

    def new_revision(self, repo_id: str, changes: dict[str, bytes | Path]) -> str:
        """A new commit of `repo_id` with these files changed or added; returns its sha."""
        current = self.repos.setdefault(repo_id, {})
        self.snapshots[(repo_id, self.commit_of(repo_id))] = dict(current)
        for name, data in changes.items():
            current[name] = HubFileData(data.read_bytes() if isinstance(data, Path) else data)
        seed = f"{repo_id} {len(self.snapshots)} {sorted(changes)}".encode()
        self.commits[repo_id] = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
        return self.commits[repo_id]

    def files_at(self, repo_id: str, revision: str | None) -> tuple[str, dict[str, HubFileData]]:
        """(commit, files) of a repository at a revision (its current one unless `revision`
        names an earlier commit)."""
        if revision is not None and (repo_id, revision) in self.snapshots:
            return revision, self.snapshots[(repo_id, revision)]
        return self.commit_of(repo_id), self.repos.get(repo_id, {})

    def ranges_for(self, name: str) -> list[str]:
        return [s.range for s in self.requests if s.path.endswith("/" + name) and s.range]

    def downloads_of(self, name: str) -> int:
        return sum(1 for s in self.requests if s.method == "GET" and s.path.endswith("/" + name))

    def start(self) -> None:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


_SEARCH_SORTS = {"trendingScore", "downloads", "likes", "lastModified", "createdAt"}
_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle(body=True)

    def do_HEAD(self) -> None:
        self._handle(body=False)

    def _handle(self, body: bool) -> None:
        hub = self.hub
        path = unquote(urlsplit(self.path).path)
        hub.requests.append(
            Seen(self.command, path, self.headers.get("Range"), self.headers.get("Authorization"))
        )
        if hub.failing is not None:
            self._send_json(hub.failing, {"error": "unavailable"}, body)
        elif path == "/api/models":
            self._search(parse_qs(urlsplit(self.path).query), body)
        elif match := _INFO.match(path):
            self._model_info(match["repo"], match["rev"], "blobs=true" in self.path.lower(), body)
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["file"], body, match["rev"])
        elif climbing := self._climbing(path):
            self._resolve(*climbing, body)
        else:
            self._send_json(404, {"error": "not found"}, body)

    def _climbing(self, path: str) -> tuple[str, str] | None:
        """(repo, name) of a listed name with `..` whose last part ends `path`, if any."""
        for repo_id, files in self.hub.repos.items():
            for name in files:
                if ".." in name.split("/") and path.endswith("/" + name.rsplit("/", 1)[-1]):
                    return repo_id, name
        return None

    def _search(self, query: dict[str, list[str]], body: bool) -> None:
        text = query.get("search", [""])[0].lower()
        gguf_only = "gguf" in query.get("filter", [])
        found = []
        for repo_id, files in self.hub.repos.items():
            if text not in repo_id.lower():
                continue
            if gguf_only and not any(n.lower().endswith(".gguf") for n in files):
                continue
            meta = self.hub.meta.get(repo_id, {})
            found.append({"id": repo_id, "_id": repo_id, "modelId": repo_id} | meta)
        sort = query.get("sort", [""])[0]
        if sort in _SEARCH_SORTS:
            found.sort(key=lambda item: item.get(sort) or 0, reverse=True)  # type: ignore[arg-type, return-value]
        limit = int(query.get("limit", ["1000"])[0])
        self._send_json(200, found[:limit], body)

    def _model_info(self, repo_id: str, revision: str | None, blobs: bool, body: bool) -> None:
        if repo_id in self.hub.failing_repos:
            self._send_json(self.hub.failing_repos[repo_id], {"error": "unavailable"}, body)
            return
        if repo_id not in self.hub.repos:
            self._send_json(
                404, {"error": "Repository not found"}, body, {"X-Error-Code": "RepoNotFound"}
            )
            return
        commit, files = self.hub.files_at(repo_id, revision)
        siblings = []
        for name, item in sorted(files.items()):
            sibling: dict[str, object] = {"rfilename": name}
            if blobs:
                size = len(item.data)
                sibling |= {
                    "size": size,
                    "blobId": item.blob_id,
                    "lfs": {"sha256": item.sha256, "size": size, "pointerSize": 134},
                }
            siblings.append(sibling)
        info = {"id": repo_id, "modelId": repo_id, "sha": commit, "siblings": siblings}
        self._send_json(200, info, body)

    def _resolve(self, repo_id: str, name: str, body: bool, revision: str | None = None) -> None:
        commit, files = self.hub.files_at(repo_id, revision)
        item = files.get(name)
        if item is None:
            self._send_json(
                404, {"error": "Entry not found"}, body, {"X-Error-Code": "EntryNotFound"}
            )
            return
        data = item.data
        if name in self.hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        status = 200
        end = len(data)
        header = self.headers.get("Range")
        if header and (m := re.match(r"bytes=(\d+)-(\d*)$", header)):
            start = int(m[1])
            end = min(end, int(m[2]) + 1) if m[2] else end
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        payload = data[start:end]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{item.sha256}"')
        self.send_header("X-Linked-Etag", f'"{item.sha256}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("X-Repo-Commit", commit)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        cut = self.hub.cut_after.get(name)
        if cut is not None and self.hub.cuts.get(name, 1) > 0:
            self.hub.cuts[name] = self.hub.cuts.get(name, 1) - 1
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _send_json(
        self, status: int, data: object, body: bool, headers: dict[str, str] | None = None
    ) -> None:
        encoded = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(encoded)


def add_quantized_repo(
    hub: FakeHub, repo_id: str, folder: Path, rows: dict[str, int], **meta: object
) -> dict[str, Path]:
    """A repository holding `<name>-<TAG>.gguf` for each tag, with an embedding of `rows[TAG]`
    rows (more rows, a larger file), and what the search reports of it (`meta`)."""
    stem = repo_id.rsplit("/", 1)[-1].removesuffix("-GGUF")
    paths = {}
    for tag, count in rows.items():
        path = write_gguf(
            folder / repo_id / f"{stem}-{tag}.gguf", tensors={"token_embd.weight": (count, 8)}
        )
        hub.add_file(repo_id, path.name, path)
        paths[tag] = path
    if meta:
        hub.meta[repo_id] = dict(meta)
    return paths


def add_vision_repo(
    hub: FakeHub, repo_id: str, model: Path, projector: Path, projectors: tuple[str, ...]
) -> None:
    """A vision model's repository as llama.cpp publishes them: `<name>-F16.gguf` and a projector
    `mmproj-<TAG>.gguf` for each tag in `projectors`, the same projector with more bytes the
    higher its precision (padding after the tensor data; only its metadata is read unless it is
    the one served)."""
    stem = repo_id.rsplit("/", 1)[-1].removesuffix("-GGUF")
    hub.add_file(repo_id, f"{stem}-F16.gguf", model)
    data = projector.read_bytes()
    padding = {"F32": 2048, "BF16": 1024, "F16": 0, "Q8_0": 0}
    for tag in projectors:
        extra = padding.get(tag, 512)
        hub.add_file(repo_id, f"mmproj-{tag}.gguf", data + b"\0" * extra)


@contextmanager
def fake_hub_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> Iterator[FakeHub]:
    """Start a fake hub and point this test's HF_ENDPOINT at it; no real hub, token or cache."""
    hub = FakeHub()
    hub.start()
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    try:
        yield hub
    finally:
        hub.stop()
