"""A Hugging Face Hub on 127.0.0.1 for tests: the HTTP routes `huggingface_hub` uses to create a repo, upload a
commit, download files and read repo info, over an in-memory store.

The real client talks to it through `HF_ENDPOINT` (read when `huggingface_hub` is imported, so clients run in a
subprocess started with `FakeHub.env()`). Uploads take the Hub's preupload + LFS + commit path: the server marks
weights and images as LFS, the client PUTs them to the LFS URL, and the NDJSON commit refers to them by sha256.
Downloads answer HEAD and GET on `resolve/<revision>/<path>` with the `X-Repo-Commit` and `ETag` headers the client
requires; LFS files redirect to a storage URL on another host name, as the Hub's do to its CDN. Any route can be
made to fail (`fail(route, status)`) or to drop the connection without answering (`drop(route)`, a server or proxy
going away mid-upload), and `requests` records every call.

Xet storage is turned off in the clients (`HF_HUB_DISABLE_XET=1`): it needs a separate content-addressed store
service; with it off the client uses the Hub's LFS protocol, as it does without `hf_xet` installed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml

TOKEN = "hf_fakehubtesttoken"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png")
NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
REPO = rf"(?P<repo>{NAME}/{NAME})"


def git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    lfs_paths: set[str] = field(default_factory=set)

    @property
    def head(self) -> str:
        return self.commits[-1][0]

    def files(self, revision: str) -> dict[str, bytes] | None:
        for sha, files in reversed(self.commits):
            if revision in ("main", sha):
                return files
        return None


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self.storage = f"http://localhost:{self.server_address[1]}"
        self.storage_auth: list[str | None] = []  # Authorization header of each storage download
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []  # (route, method, path)
        self.failures: dict[str, int | None] = {}  # route -> injected status, None: drop the connection
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def env(self, hf_home: str | os.PathLike) -> dict[str, str]:
        """Environment for a client process: this endpoint, online, no Xet, a private `HF_HOME`, the write token."""
        env = dict(os.environ, HF_ENDPOINT=self.endpoint, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_XET="1",
                   HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_ETAG_TIMEOUT="30")
        env.pop("HF_HUB_CACHE", None)
        env["HF_TOKEN"] = TOKEN
        return env

    def fail(self, route: str, status: int = 500) -> None:
        """Answer every later call of `route` (`create`, `preupload`, `lfs_batch`, `lfs_upload`, `commit`, `resolve`,
        `info`, ...) with `status` until `heal(route)`."""
        self.failures[route] = status

    def drop(self, route: str) -> None:
        """Read every later call of `route` and close the connection without an answer until `heal(route)`: the
        client sees the server disconnect (`RemoteProtocolError`), as when a server or proxy goes away mid-upload."""
        self.failures[route] = None

    def heal(self, route: str) -> None:
        self.failures.pop(route, None)

    def files(self, repo_id: str) -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.files("main")) if repo.commits else {}

    def add_commit(self, repo: Repo, files: dict[str, bytes]) -> str:
        parent = repo.head if repo.commits else ""
        digest = hashlib.sha1((parent + json.dumps(sorted((p, git_blob_sha(c)) for p, c in files.items()))).encode())
        sha = digest.hexdigest()
        repo.commits.append((sha, files))
        return sha


class _Handler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # the request list replaces the stderr log
        pass

    # ------------------------------------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, data, headers: dict[str, str] | None = None, head: bool = False):
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
               head: bool = False):
        extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **(headers or {})}
        self._json(status, {"error": message}, extra, head)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _repo(self, repo_id: str, head: bool = False, write: bool = False) -> Repo | None:
        """The repo, or None after answering 401 RepoNotFound as the Hub does for missing or hidden repos."""
        repo = self.server.repos.get(repo_id)
        if repo is None or ((repo.private or write) and not self._authorized()):
            self._error(401 if not self._authorized() else 404, "Repository not found", "RepoNotFound", head=head)
            return None
        return repo

    def _dispatch(self, method: str):
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        for route_method, name, pattern in ROUTES:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                with self.server.lock:
                    self.server.requests.append((name, method, path))
                    failing, status = name in self.server.failures, self.server.failures.get(name)
                if failing:
                    self._body()
                    if status is None:
                        self.close_connection = True
                        return
                    return self._error(status, f"Injected failure of {name}", head=method == "HEAD")
                return getattr(self, f"_{name}")(query=query, head=method == "HEAD", **match.groupdict())
        with self.server.lock:
            self.server.requests.append(("unknown", method, path))
        self._body()
        self._error(404, f"No route {method} {path}", head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    # ------------------------------------------------------------------------------------------------ repos
    def _snapshot(self, repo_id: str, revision: str, head: bool = False):
        """`(repo, files, commit sha)` at `revision`, or None after answering the Hub's error."""
        found = self._repo(repo_id, head=head)
        if found is None:
            return None
        files = found.files(revision)
        if files is None:
            self._error(404, "Invalid rev id", "RevisionNotFound", head=head)
            return None
        return found, files, found.head if revision == "main" else revision

    def _create(self, query, head, **_):
        payload = json.loads(self._body())
        if not self._authorized():
            return self._error(401, "Invalid credentials in Authorization header")
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if payload.get("type", "model") != "model" or not re.fullmatch(f"{NAME}/{NAME}", repo_id):
            return self._error(400, f"Invalid repo {repo_id!r}")
        with self.server.lock:
            if repo_id in self.server.repos:  # the Hub's 409 names the repo's URL (create_repo(exist_ok=True) reads it)
                return self._json(409, {"error": "You already created this model repo",
                                        "url": f"{self.server.endpoint}/{repo_id}"},
                                  {"X-Error-Message": "You already created this model repo"})
            self.server.repos[repo_id] = repo = Repo(private=payload.get("visibility") == "private" or bool(payload.get("private")))
            self.server.add_commit(repo, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"})
        self._json(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def _delete(self, query, head, **_):
        payload = json.loads(self._body())
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        if self._repo(repo_id, write=True) is None:
            return
        with self.server.lock:
            del self.server.repos[repo_id]
        self._send(200)

    def _info(self, repo, query, head, revision="main", **_):
        if (snapshot := self._snapshot(repo, revision, head)) is None:
            return
        found, files, sha = snapshot
        card = files.get("README.md", b"").decode()
        card_data = yaml.safe_load(card.split("---")[1]) if card.startswith("---") else None
        self._json(200, {
            "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha, "private": found.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "tags": (card_data or {}).get("tags", []), "pipeline_tag": (card_data or {}).get("pipeline_tag"),
            "library_name": (card_data or {}).get("library_name"), "cardData": card_data,
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }, head=head)

    def _tree(self, repo, revision, query, head, subpath=None, **_):
        if (snapshot := self._snapshot(repo, revision, head)) is None:
            return
        found, files, _ = snapshot
        prefix = subpath.strip("/") + "/" if subpath and subpath.strip("/") else ""
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for name in sorted(files):
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/")[0])
                continue
            entries.append({"type": "file", "path": name, "size": len(files[name]), "oid": self._oid(found, name, files[name])})
        entries += [{"type": "directory", "path": folder, "oid": "0" * 40} for folder in sorted(folders)]
        if prefix and not entries:
            return self._error(404, f"{subpath} does not exist", "EntryNotFound", head=head)
        self._json(200, entries, head=head)

    @staticmethod
    def _oid(repo: Repo, path: str, content: bytes) -> str:
        return hashlib.sha256(content).hexdigest() if path in repo.lfs_paths else git_blob_sha(content)

    # ------------------------------------------------------------------------------------------------ uploads
    def _validate_yaml(self, query, head, **_):
        payload = json.loads(self._body())
        content = payload.get("content", "")
        errors = []
        if content.startswith("---"):
            parts = content.split("---", 2)
            try:
                metadata = yaml.safe_load(parts[1]) if len(parts) == 3 else None
            except yaml.YAMLError as err:
                metadata, errors = None, [f"YAML does not parse: {err}"]
            if not errors and not isinstance(metadata, dict):
                errors.append("the metadata block must be a YAML mapping")
            if isinstance(metadata, dict):
                errors += _metadata_errors(metadata)
        if errors:
            return self._json(400, {"errors": [{"message": message} for message in errors]})
        self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo, revision, query, head, **_):
        payload = json.loads(self._body())
        found = self._repo(repo, write=True)
        if found is None:
            return
        current = found.files(revision)
        if current is None:
            return self._error(404, "Invalid rev id", "RevisionNotFound")
        answer = []
        for entry in payload["files"]:
            path = entry["path"]
            lfs = path.endswith(LFS_SUFFIXES) or entry["size"] >= 10 * 1024 * 1024
            oid = self._oid(found, path, current[path]) if path in current else None
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": answer, "commitOid": found.head})

    def _lfs_batch(self, repo, query, head, **_):
        payload = json.loads(self._body())
        if self._repo(repo, write=True) is None:
            return
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.server.lfs:
                href = f"{self.server.endpoint}/lfs-storage/{obj['oid']}"
                entry["actions"] = {"upload": {"href": href, "header": {}},
                                    "verify": {"href": f"{href}/verify", "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_upload(self, oid, query, head, **_):
        body = self._body()
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "Uploaded content does not match its oid")
        with self.server.lock:
            self.server.lfs[oid] = body
        self._send(200)

    def _lfs_verify(self, oid, query, head, **_):
        payload = json.loads(self._body())
        stored = self.server.lfs.get(oid)
        if stored is None or len(stored) != payload["size"]:
            return self._error(404, f"Object {oid} was not uploaded")
        self._send(200)

    def _commit(self, repo, revision, query, head, **_):
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        found = self._repo(repo, write=True)
        if found is None:
            return
        current = found.files(revision)
        if current is None or revision != "main":
            return self._error(404, "Invalid rev id", "RevisionNotFound")
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "The commit must start with a header line")
        files, lfs_paths = dict(current), set(found.lfs_paths)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs_paths.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self.server.lfs:
                    return self._error(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = self.server.lfs[value["oid"]]
                lfs_paths.add(value["path"])
            elif key in ("deletedFile", "deletedFolder"):
                gone = [p for p in files if p == value["path"] or p.startswith(value["path"].rstrip("/") + "/")]
                if not gone:
                    return self._error(404, f"{value['path']} does not exist", "EntryNotFound")
                for p in gone:
                    del files[p]
            else:
                return self._error(400, f"Unknown commit operation {key!r}")
        with self.server.lock:
            found.lfs_paths = lfs_paths
            sha = self.server.add_commit(found, files)
        self._json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.server.endpoint}/{repo}/commit/{sha}",
                         "pullRequestUrl": None})

    # ------------------------------------------------------------------------------------------------ downloads
    def _resolve(self, repo, revision, filename, query, head, **_):
        if (snapshot := self._snapshot(repo, revision, head)) is None:
            return
        found, files, sha = snapshot
        if filename not in files:
            return self._error(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha}, head=head)
        content = files[filename]
        if filename in found.lfs_paths:
            # As the Hub does: LFS files redirect to storage on another host (a CDN; here `localhost` for 127.0.0.1),
            # the metadata travelling in X-Linked-* headers of the redirect itself.
            oid = hashlib.sha256(content).hexdigest()
            headers = {"X-Repo-Commit": sha, "X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(len(content)),
                       "ETag": f'"{git_blob_sha(content)}"', "Location": f"{self.server.storage}/lfs-storage/{oid}"}
            return self._send(302, b"", headers, head=head)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha(content)}"', "Content-Type": "application/octet-stream"}
        self._send(200, content, headers, head=head)

    def _storage(self, oid, query, head, **_):
        with self.server.lock:
            self.server.storage_auth.append(self.headers.get("Authorization"))
        content = self.server.lfs.get(oid)
        if content is None:
            return self._error(404, "No such object", head=head)
        self._send(200, content, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"}, head=head)


def _metadata_errors(metadata: dict) -> list[str]:
    """The checks the Hub applies to the model card fields this project writes."""
    errors = []
    for name in ("library_name", "license", "pipeline_tag", "language"):
        if name in metadata and not isinstance(metadata[name], (str, list)):
            errors.append(f"'{name}' must be a string")
    for name in ("tags", "datasets", "metrics"):
        if name in metadata and not (isinstance(metadata[name], list) and all(isinstance(v, str) for v in metadata[name])):
            errors.append(f"'{name}' must be a list of strings")
    for index, model in enumerate(metadata.get("model-index") or []):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f"model-index[{index}] needs a name")
            continue
        for r, result in enumerate(model.get("results") or []):
            where = f"model-index[{index}].results[{r}]"
            if not isinstance(result.get("task", {}).get("type"), str):
                errors.append(f"{where}.task.type must be a string")
            dataset = result.get("dataset", {})
            if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                errors.append(f"{where}.dataset needs a type and a name")
            for m, metric in enumerate(result.get("metrics") or []):
                if not isinstance(metric.get("type"), str) or not isinstance(metric.get("value"), (int, float)):
                    errors.append(f"{where}.metrics[{m}] needs a string type and a numeric value")
    return errors


ROUTES = [
    ("POST", "create", r"/api/repos/create"),
    ("DELETE", "delete", r"/api/repos/delete"),
    ("POST", "validate_yaml", r"/api/validate-yaml"),
    ("GET", "info", rf"/api/models/{REPO}"),
    ("GET", "info", rf"/api/models/{REPO}/revision/(?P<revision>[^/]+)"),
    ("GET", "tree", rf"/api/models/{REPO}/tree/(?P<revision>[^/]+)(?P<subpath>/.*)?"),
    ("POST", "preupload", rf"/api/models/{REPO}/preupload/(?P<revision>[^/]+)"),
    ("POST", "commit", rf"/api/models/{REPO}/commit/(?P<revision>[^/]+)"),
    ("POST", "lfs_batch", rf"/{REPO}\.git/info/lfs/objects/batch"),
    ("PUT", "lfs_upload", r"/lfs-storage/(?P<oid>[0-9a-f]{64})"),
    ("POST", "lfs_verify", r"/lfs-storage/(?P<oid>[0-9a-f]{64})/verify"),
    ("HEAD", "resolve", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)"),
    ("GET", "resolve", rf"/{REPO}/resolve/(?P<revision>[^/]+)/(?P<filename>.+)"),
    ("GET", "storage", r"/lfs-storage/(?P<oid>[0-9a-f]{64})"),
    ("HEAD", "storage", r"/lfs-storage/(?P<oid>[0-9a-f]{64})"),
]
