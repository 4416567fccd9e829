"""The ``interp view`` web app: JSON endpoints, PNGs, the viewed folder's files, the page.

Why Starlette and uvicorn rather than the standard library's ``http.server``: every query
blocks (DuckDB, Pillow), and Starlette runs plain (``def``) endpoints in a thread pool, so a
slow deep page or a big image never holds up the thumbnails the browser asks for meanwhile;
``ThreadingHTTPServer`` would give a thread per connection but no routing, no path-parameter
decoding, no keep-alive tuning and a hand-written shutdown. uvicorn gives HTTP/1.1 keep-alive
(a grid asks for 60 thumbnails at once), a clean Ctrl-C, and binds a socket we open, so that
``--port 0`` can print the port it got. Both are small, pure Python (uvicorn without its
``[standard]`` extras) and need no build.

Endpoints (``source`` = 0, or 1 for the second audit of a comparison; default 0):

==========================  =================================================================
``/``, ``/static/<file>``   the page (``interp_core/view/static``); a placeholder without it
``/api/info``               kind, title, sources (rows, method, layer, model, classes),
                            columns and their types, the views that apply
``/api/facets``             counts per label, group, prediction (class numbers; names in
                            ``info.sources[i].classes``), target; min/max of the scores
``/api/rows``               a page of rows: filters ``label``, ``group``, ``prediction`` (a
                            number or a class name), ``target`` (repeatable; ``__null__`` is
                            "none"), ``correct=true|false``, ``pointing=hit|miss``,
                            ``score_min/max``, ``energy_min/max``, ``q``; ``sort`` (a numeric
                            column, ``id``, ``index``), ``order``, ``offset``, ``limit`` <= 500
``/api/row?id=``            every column of one row, its image, map, overlay and mask URLs,
                            box, size, and the same id in the other source (``others``)
``/api/overview``           overall, per class and per group: accuracy, pointing game (Wilson),
                            energy in box (t), each a 95% interval; ``flags`` (see
                            :func:`interp_core.view.queries.flags`)
``/api/compare``            the ids of both audits side by side, A's filters and sort,
                            ``changed=none|all`` (no filter), ``any``, ``prediction``,
                            ``pointing``, ``unchanged``; ``counts``
``/api/training``           steps, tags, and per sample its tracks of frames (``cam``,
                            ``features``, ``other``)
``/api/map.png?id=``        the stored map in colour, alpha = value (``&mode=opaque``: 255)
``/api/image?id=``          the row's ``path`` decoded, as an 8-bit PNG
``/api/mask.png?id=``       the row's mask at the image's size, white on transparent
``/files/<path>``           a file under the folder (``?source=1`` under the second one)
==========================  =================================================================

Every answer about the data is JSON with the data's text as it is; the page escapes it.
Errors are JSON ``{"error": ...}`` with 400 or 404, never a traceback. Nothing under the
viewed folders is written: files are opened for reading, DuckDB keeps its database in memory.
Only ``Host: 127.0.0.1`` / ``localhost`` is answered when bound to loopback (a web page
elsewhere cannot reach the server through DNS rebinding).

Files under a folder (``/files/<path>``) are served only when the path, resolved (symbolic
links followed), lies inside that folder: ``..`` in any spelling, absolute paths and links out
get 404. Source images (``/api/image``) are read from the ``path`` column of a row found by
id, never from a path in the URL.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from interp_core.view.folders import Source, ViewError, detect_all
from interp_core.view.queries import Database, NotFoundError, json_value, parse_filters

log = logging.getLogger("interp_core.view")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
#: Files of the viewed folder are data: an HTML or SVG file among them opens sandboxed (no
#: script, an origin of its own), so it cannot call the API as the page does.
FILES_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
PLACEHOLDER = ("<!doctype html><meta charset='utf-8'><title>interp view</title>"
               "<p>The interp view page is not installed (interp_core/view/static/index.html "
               "is missing); the API answers at <a href='/api/info'>/api/info</a>.</p>")


class Viewer:
    """The state behind the endpoints: the sources and their DuckDB database."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        self.sources: list[Source] = detect_all(list(paths))
        self.db = Database(self.sources)

    def close(self) -> None:
        self.db.close()

    @property
    def kind(self) -> str:
        return "compare" if len(self.sources) == 2 else self.sources[0].kind

    def source(self, request: Any) -> Source:
        text = request.query_params.get("source", "0")
        try:
            index = int(text)
        except ValueError:
            raise ViewError(f"source={text!r} must be 0 or {len(self.sources) - 1}") from None
        if not 0 <= index < len(self.sources):
            raise ViewError(f"source={index} is out of range: "
                            f"{', '.join(str(s.index) for s in self.sources)}")
        return self.sources[index]

    # -- URLs --------------------------------------------------------------------------
    @staticmethod
    def file_url(source: Source, rel: str | None) -> str | None:
        if not rel:
            return None
        url = "/files/" + quote(rel, safe="/")
        return url if source.index == 0 else f"{url}?source={source.index}"

    @staticmethod
    def api_url(endpoint: str, source: Source, id_: str) -> str:
        return f"/api/{endpoint}?source={source.index}&id={quote(id_, safe='')}"

    def decorate(self, source: Source, row: dict[str, Any]) -> dict[str, Any]:
        """A row with its ``thumb`` URL and ``display_prediction``."""
        table = self.db.table(source.index)
        row["thumb"] = self.file_url(source, row.get("overlay"))
        if "prediction" in row:
            row["display_prediction"] = table.display_prediction(row["prediction"])
        elif "target" in row:
            row["display_prediction"] = None if row["target"] is None else str(row["target"])
        else:
            row["display_prediction"] = None
        return row

    # -- endpoints ---------------------------------------------------------------------
    def info(self, request: Any) -> dict[str, Any]:
        first = self.sources[0]
        columns = []
        if first.index in self.db.tables:
            table = self.db.table(first.index)
            columns = [{"name": c, "type": table.column_kind(c)} for c in table.row_columns]
        views = {"audit": ["overview", "grid"], "explain": ["overview", "grid"],
                 "training": ["training"], "compare": ["overview", "grid", "compare"]}[self.kind]
        title = (f"{self.sources[0].name} vs {self.sources[1].name}" if self.kind == "compare"
                 else f"{first.name} ({first.kind})")
        return {"kind": self.kind, "title": title, "columns": columns, "views": views,
                "sources": [self._source_info(s) for s in self.sources]}

    def _source_info(self, s: Source) -> dict[str, Any]:
        rows = (self.db.count(self.db.table(s.index)) if s.index in self.db.tables
                else len(s.entries))
        return {"index": s.index, "name": s.name, "path": str(s.path), "kind": s.kind,
                "rows": rows, "method": s.method, "layer": s.layer, "model": s.model,
                "classes": None if s.classes is None else list(s.classes)}

    def facets(self, request: Any) -> dict[str, Any]:
        return self.db.facets(self.source(request).index)

    def rows(self, request: Any) -> dict[str, Any]:
        source = self.source(request)
        q = request.query_params
        page = self.db.rows(source.index, parse_filters(q), q.get("sort"), q.get("order"),
                            q.get("offset", 0), q.get("limit", 60))
        page["rows"] = [self.decorate(source, r) for r in page["rows"]]
        return page

    def row(self, request: Any) -> dict[str, Any]:
        source = self.source(request)
        id_ = _required(request, "id")
        row = self.decorate(source, self.db.row(source.index, id_))
        has_map = row.get("map_height") is not None
        box = None
        if all(row.get(k) is not None for k in ("box_x0", "box_y0", "box_x1", "box_y1")):
            box = [row["box_x0"], row["box_y0"], row["box_x1"], row["box_y1"]]
        others = []
        for other in self.sources:
            if other.index == source.index or other.index not in self.db.tables:
                continue
            try:
                match = self.decorate(other, self.db.row(other.index, id_))
            except NotFoundError:
                continue
            others.append({"source": other.index, "name": other.name,
                           "method": other.method, "layer": match.get("layer", other.layer),
                           "map": self.api_url("map.png", other, id_),
                           "overlay": self.file_url(other, match.get("overlay")),
                           "row": match})
        image_path = _image_path(row)
        # An audit copied to another machine names images that are not there: say so, and
        # the page shows the stored overlay instead of a broken picture.
        image_found = image_path is not None and os.path.isfile(image_path)
        return {
            "row": row,
            "image": self.api_url("image", source, id_) if image_found else None,
            "image_missing": image_path if image_path and not image_found else None,
            "map": self.api_url("map.png", source, id_) if has_map else None,
            "overlay": self.file_url(source, row.get("overlay")),
            "mask": self.api_url("mask.png", source, id_) if row.get("mask") else None,
            "box": box, "width": row.get("width"), "height": row.get("height"),
            "others": others,
        }

    def overview(self, request: Any) -> dict[str, Any]:
        return self.db.overview(self.source(request).index)

    def compare(self, request: Any) -> dict[str, Any]:
        if self.kind != "compare":
            raise ViewError("/api/compare needs two audit folders: interp view A B")
        q = request.query_params
        page = self.db.compare(parse_filters(q), q.get("changed"), q.get("sort"),
                               q.get("order"), q.get("offset", 0), q.get("limit", 60))
        for item in page["rows"]:
            item["a"] = self.decorate(self.sources[0], item["a"])
            item["b"] = self.decorate(self.sources[1], item["b"])
        return page

    def training(self, request: Any) -> dict[str, Any]:
        source = self.source(request)
        if source.kind != "training":
            raise ViewError(f"/api/training needs a training-log folder; "
                            f"{str(source.path)!r} is an {source.kind} folder")
        return training_listing(source, self.file_url)

    # -- binary --------------------------------------------------------------------------
    def map_png(self, request: Any) -> bytes:
        from interp_core.view.images import map_png

        source = self.source(request)
        blob, height, width = self.db.map_of(source.index, _required(request, "id"))
        return map_png(blob, height, width,
                       opaque=request.query_params.get("mode") == "opaque")

    def image_png(self, request: Any) -> bytes:
        from interp_core.io.errors import FileReadError
        from interp_core.view.images import image_png

        source = self.source(request)
        id_ = _required(request, "id")
        path = _image_path(self.db.row(source.index, id_))
        if not path:
            raise NotFoundError(f"the row of id {id_!r} names no image file")
        try:
            return image_png(path)
        except FileReadError as exc:
            raise NotFoundError(f"the image of id {id_!r} cannot be read: {exc.reason}") from None

    def mask_png(self, request: Any) -> bytes:
        from interp_core.io.errors import FileReadError
        from interp_core.view.images import mask_png

        source = self.source(request)
        id_ = _required(request, "id")
        row = self.db.row(source.index, id_)
        if not row.get("mask") or not row.get("width") or not row.get("height"):
            raise NotFoundError(f"the row of id {id_!r} has no mask")
        mask = Path(str(row["mask"]))
        if not mask.is_absolute():
            mask = Path(str(row.get("path") or "")).parent / mask
        try:
            return mask_png(str(mask), int(row["height"]), int(row["width"]))
        except FileReadError as exc:
            raise NotFoundError(f"the mask of id {id_!r} cannot be read: {exc.reason}") from None

    def file_path(self, request: Any, rel: str) -> Path:
        """The file ``rel`` under the source's folder, or :class:`NotFoundError`."""
        source = self.source(request)
        found = safe_path(source.path, rel)
        if found is None:
            raise NotFoundError(f"no file {rel!r} in the viewed folder")
        return found


def training_listing(source: Source, file_url: Callable[[Source, str | None], str | None]
                     ) -> dict[str, Any]:
    """The ``/api/training`` answer: steps, tags, and per sample its tracks of frames."""
    from interp_core.methods import method_class

    def kind(tag: str) -> str:
        head = tag.split("/", 1)[0]
        if head == "features":  # FeatureMapLog's "features/<layer>"
            return "features"
        try:  # CAMLog's "<method>/<layer>"
            method_class(head)
        except (KeyError, ValueError, TypeError):
            return "other"
        return "cam"

    steps = sorted({int(e["step"]) for e in source.entries})
    tags = list(dict.fromkeys(e["tag"] for e in source.entries))
    samples: dict[str, dict[str, dict[str, Any]]] = {}
    for e in source.entries:
        tracks = samples.setdefault(e["name"], {})
        track = tracks.setdefault(e["tag"], {"tag": e["tag"], "kind": kind(e["tag"]),
                                             "frames": {}})
        rel = e["path"] if safe_path(source.path, e["path"]) is not None else None
        track["frames"][str(int(e["step"]))] = file_url(source, rel)
    return {"steps": steps, "tags": tags, "samples": [
        {"name": name, "tracks": list(tracks.values())} for name, tracks in samples.items()]}


def safe_path(root: Path, rel: str) -> Path | None:
    """``root / rel`` when it is a regular file inside ``root`` (symbolic links resolved);
    None for anything else: ``..`` parts, absolute paths, NUL, backslashes, links out."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/") or ":" in rel[:3]:
        return None
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts) or os.path.isabs(rel):
        return None
    try:
        root = root.resolve(strict=True)
        found = (root / rel).resolve(strict=True)
        found.relative_to(root)
    except (OSError, ValueError, RuntimeError):
        return None
    return found if found.is_file() else None


def _image_path(row: dict[str, Any]) -> str | None:
    """The image file a row names: an audit's ``path``, an explain run's ``file``."""
    path = row.get("path") or row.get("file")
    return str(path) if path else None


def _required(request: Any, name: str) -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        raise ViewError(f"{name}= is required")
    return str(value)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return json_value(value)


# -- the Starlette app -------------------------------------------------------------------
def create_app(paths: Sequence[str | os.PathLike[str]], *,
               allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS) -> Any:
    """The Starlette app that shows ``paths`` (one folder, or two audit folders).

    Parameters
    ----------
    paths : list of path
        What ``interp view`` was given.
    allowed_hosts : list of str or None
        Host names the app answers (the ``Host`` header; a page elsewhere cannot reach a
        server on 127.0.0.1 through DNS rebinding); None answers any.

    Raises
    ------
    ViewError
        A folder that is none of those ``interp view`` shows.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    viewer = Viewer(paths)

    class Json(JSONResponse):
        def render(self, content: Any) -> bytes:
            return super().render(_clean(content))

    def error(status: int, message: str) -> Response:
        return Json({"error": message}, status_code=status,
                    headers={"Cache-Control": "no-store"})

    def handle(endpoint: Callable[[Request], Response]) -> Callable[[Request], Response]:
        @functools.wraps(endpoint)
        def wrapped(request: Request) -> Response:
            try:
                response = endpoint(request)
            except ViewError as exc:
                return error(400, str(exc))
            except NotFoundError as exc:
                return error(404, str(exc.args[0] if exc.args else "not found"))
            except Exception as exc:  # never a traceback to the browser
                log.error("interp view: %s failed: %s: %s", request.url.path,
                          type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
                return error(500, f"internal error: {type(exc).__name__}: {exc}")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            return response
        return wrapped

    def json_route(method: Callable[[Any], dict[str, Any]]) -> Callable[[Request], Response]:
        return handle(lambda request: Json(method(request),
                                           headers={"Cache-Control": "no-store"}))

    def png_route(method: Callable[[Any], bytes]) -> Callable[[Request], Response]:
        return handle(lambda request: Response(method(request), media_type="image/png",
                                               headers={"Cache-Control": "max-age=3600"}))

    def files(request: Request) -> Response:
        from starlette.responses import FileResponse

        return FileResponse(viewer.file_path(request, request.path_params["rel"]),
                            headers={"Cache-Control": "max-age=3600",
                                     "Content-Security-Policy": FILES_CSP})

    static_root = resources.files("interp_core.view") / "static"

    def static_file(name: str) -> Response:
        media = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
                 ".png": "image/png", ".ico": "image/x-icon"}
        suffix = os.path.splitext(name)[1]
        ok = (name and "/" not in name and "\\" not in name and not name.startswith(".")
              and suffix in media)
        item = static_root / name if ok else None
        if item is None or not item.is_file():
            if name == "index.html":
                return Response(PLACEHOLDER, media_type=media[".html"],
                                headers={"Content-Security-Policy": CSP})
            raise NotFoundError(f"no static file {name!r}")
        return Response(item.read_bytes(), media_type=media[suffix], headers={
            "Cache-Control": "no-cache", "Content-Security-Policy": CSP})

    def index(request: Request) -> Response:
        return static_file("index.html")

    def static(request: Request) -> Response:
        return static_file(request.path_params["name"])

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(getattr(exc, "status_code", 404), "not found")

    routes = [
        Route("/", handle(index)),
        Route("/index.html", handle(index)),
        Route("/static/{name:path}", handle(static)),
        Route("/files/{rel:path}", handle(files)),
        Route("/api/info", json_route(viewer.info)),
        Route("/api/facets", json_route(viewer.facets)),
        Route("/api/rows", json_route(viewer.rows)),
        Route("/api/row", json_route(viewer.row)),
        Route("/api/overview", json_route(viewer.overview)),
        Route("/api/compare", json_route(viewer.compare)),
        Route("/api/training", json_route(viewer.training)),
        Route("/api/map.png", png_route(viewer.map_png)),
        Route("/api/image", png_route(viewer.image_png)),
        Route("/api/mask.png", png_route(viewer.mask_png)),
    ]
    middleware = [] if allowed_hosts is None else [
        Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={404: not_found, 405: not_found})
    app.state.viewer = viewer
    return app
