"""MkDocs hook: execute the jupytext tutorials in ``tutorials/`` and add them as pages.

Each ``tutorials/<name>.py`` (percent format) is executed in a fresh IPython kernel (nbclient),
two at a time, and rendered to ``tutorials/<name>.md`` with its outputs: text in code blocks,
figures as PNG files beside the page, Markdown outputs as Markdown. The executed notebook
(``<name>.ipynb``) and the source (``<name>.py``) are published next to the page for download.

A cell that raises fails the build. Executed notebooks are cached in ``build/tutorials/`` under
a key of the tutorial's source and every ``.py`` file of the library (``interp_core/``,
``backends/``), so ``mkdocs serve`` and repeated builds re-execute only what changed; a fresh
clone (CI) executes everything. Pages are rendered from the executed notebooks on every build.

TensorFlow's C++ start-up lines on stderr (absl's ``I0000 ...``) are dropped from the pages.

Cell tags (``# %% tags=["remove-input"]``): ``remove-cell`` (run, show nothing),
``remove-input`` (show only the outputs), ``remove-output`` (show only the code).

Environment: each kernel runs with its working directory in ``build/tutorials/run/<name>/``,
``WANDB_MODE=offline``, ``TF_CPP_MIN_LOG_LEVEL=2`` and ``MPLBACKEND=Agg``.
``INTERP_DOCS_WORKERS`` sets how many tutorials run at once (default 2), and each kernel gets
``OMP_NUM_THREADS = cores / workers`` unless the environment sets it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.tutorials")

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "tutorials"
CACHE = ROOT / "build" / "tutorials"
PAGES = "tutorials"  # the folder of the rendered pages in the site
#: Rendered pages live in ``RENDERED / PAGES``, so that ``RENDERED`` is their ``src_dir``.
RENDERED = CACHE / "rendered"
CELL_TIMEOUT_S = 600
WORKERS = max(1, int(os.environ.get("INTERP_DOCS_WORKERS", "2")))
#: Threads per kernel (OpenMP: torch, NumPy's BLAS) when the caller sets none, so that the
#: tutorials running side by side share the cores instead of fighting over them.
THREADS = max(1, (os.cpu_count() or 2) // WORKERS)
ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Start-up chatter of TensorFlow's C++ runtime on stderr, printed before TF_CPP_MIN_LOG_LEVEL
#: applies; dropped from the pages (every other stderr line is kept).
NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} )")
HIDDEN_MIMES = ("application/vnd.jupyter.widget-view+json",)


def _library_digest() -> str:
    digest = hashlib.sha256()
    for folder in ("interp_core", "backends"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _key(source: Path, library: str) -> str:
    digest = hashlib.sha256(source.read_bytes())
    digest.update(library.encode())
    return digest.hexdigest()[:16]


def _execute(source: Path, out_dir: Path) -> dict[str, Any]:
    """Run one tutorial; returns ``{"notebook": executed nbformat node, "seconds": float}``."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    run_dir = CACHE / "run" / source.stem
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = {"OMP_NUM_THREADS": str(THREADS), **os.environ, "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(run_dir)}})
    start = time.perf_counter()
    try:
        client.execute(env=env)  # passed on to the kernel process
    except CellExecutionError as exc:
        message = ANSI.sub("", str(exc))
        raise PluginError(f"tutorial {source.name} failed:\n{message}") from None
    seconds = time.perf_counter() - start
    return {"notebook": notebook, "seconds": seconds}


def _tags(cell: Any) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _outputs(outputs: list[Any], name: str, figures: Path, count: list[int]) -> list[str]:
    """Markdown blocks of one cell's outputs; consecutive stream outputs become one block."""
    blocks: list[str] = []
    stream: list[str] = []
    for output in [*outputs, {"output_type": "end"}]:
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
            if output.get("name") == "stderr":
                text = "".join(line for line in text.splitlines(keepends=True)
                               if not NOISE.match(line))
            stream.append(text)
            continue
        joined = ANSI.sub("", "".join(stream)).rstrip()
        stream = []
        if joined.strip():
            blocks.append(f"``` {{ .text .output }}\n{joined}\n```")
        data = output.get("data", {}) if kind in ("execute_result", "display_data") else {}
        if any(m in data for m in HIDDEN_MIMES):
            continue
        if "image/png" in data:
            figures.mkdir(parents=True, exist_ok=True)
            count[0] += 1
            file = figures / f"figure_{count[0]:02d}.png"
            file.write_bytes(base64.b64decode(data["image/png"]))
            alt = output.get("metadata", {}).get("alt", f"figure {count[0]}")
            src = f"{name}_files/{file.name}"
            blocks.append(f"[![{alt}]({src})]({src})")  # a click shows it at full size
        elif "text/markdown" in data:
            blocks.append(data["text/markdown"])
        elif "text/plain" in data:
            text = ANSI.sub("", data["text/plain"]).rstrip()
            blocks.append(f"``` {{ .text .output }}\n{text}\n```")
    return blocks


def _render(notebook: Any, name: str, out_dir: Path, seconds: float) -> str:
    """Markdown of an executed notebook; figures written to ``out_dir/<name>_files/``."""
    figures = out_dir / f"{name}_files"
    shutil.rmtree(figures, ignore_errors=True)
    parts: list[str] = []
    count = [0]
    for index, cell in enumerate(notebook.cells):
        tags = _tags(cell)
        if "remove-cell" in tags:
            continue
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            if index == 0:
                parts.append(
                    f"Run it yourself: [{name}.py]({name}.py){{: download }} (jupytext "
                    f"source) or [{name}.ipynb]({name}.ipynb){{: download }} (the executed "
                    f"notebook). Executed in {seconds:.0f} s when this site was built."
                )
            continue
        if cell.cell_type != "code":
            continue
        if "remove-input" not in tags and cell.source.strip():
            parts.append(f"```python\n{cell.source}\n```")
        if "remove-output" not in tags:
            parts.extend(_outputs(cell.get("outputs", []), name, figures, count))
    return "\n\n".join(parts) + "\n"


def _build(source: Path, library: str) -> float:
    """Execute ``source`` unless the cache holds its executed notebook, then render it.

    Returns the seconds spent executing (0 on a cache hit). Rendering always runs: it is
    cheap, and a change of this hook's rendering must reach every page.
    """
    import nbformat

    name = source.stem
    out_dir = RENDERED / PAGES
    key = _key(source, library)
    stamp = CACHE / "keys" / f"{name}.json"
    executed = out_dir / f"{name}.ipynb"
    cached = json.loads(stamp.read_text()) if stamp.exists() else {}
    if cached.get("key") == key and executed.exists():
        log.info("tutorial %s: cached (executed in %.1f s)", source.name, cached["seconds"])
        notebook, seconds, spent = nbformat.read(executed, as_version=4), cached["seconds"], 0.0
    else:
        log.info("tutorial %s: executing", source.name)
        result = _execute(source, out_dir)
        notebook, seconds = result["notebook"], result["seconds"]
        spent = seconds
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, executed)
        shutil.copyfile(source, out_dir / f"{name}.py")
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": key, "seconds": round(seconds, 1)}))
        log.info("tutorial %s: executed in %.1f s", source.name, seconds)
    (out_dir / f"{name}.md").write_text(_render(notebook, name, out_dir, seconds))
    return spent


def _last_seconds(source: Path) -> float:
    """How long ``source`` took the last time it ran here (0 if never)."""
    stamp = CACHE / "keys" / f"{source.stem}.json"
    return json.loads(stamp.read_text()).get("seconds", 0.0) if stamp.exists() else 0.0


@event_priority(100)  # before other plugins see the file list
def on_files(files: Files, config: Any) -> Files:
    sources = sorted(SOURCES.glob("*.py"))
    if not sources:
        raise PluginError(f"no tutorials found in {SOURCES}")
    library = _library_digest()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:  # the longest first
        list(pool.map(lambda s: _build(s, library), sorted(sources, key=_last_seconds,
                                                           reverse=True)))
    log.info("tutorials ready in %.1f s", time.perf_counter() - start)
    out_dir = RENDERED / PAGES
    names = {s.stem for s in sources}
    for path in sorted(out_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(out_dir)
        if rel.parts[0].split(".")[0].removesuffix("_files") not in names:
            continue  # a tutorial that was removed since the last build
        files.append(File(f"{PAGES}/{rel.as_posix()}", src_dir=str(RENDERED),
                          dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
