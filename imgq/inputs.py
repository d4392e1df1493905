"""What `imgq submit` sends: paths and URLs as given, a folder as the image files in it.

A folder's other entries are skipped, each reported through ``on_skip`` with the reason, so a PDF
among the scans never goes missing in silence.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("b.PNG", "a.jpg", "scan.pdf", ".hidden.png"):
...     _ = (d / name).write_bytes(b"")
>>> skipped = []
>>> [pathlib.Path(p).name for p in expand_inputs([str(d)], on_skip=lambda p, why: skipped.append((p.name, why)))]
['a.jpg', 'b.PNG']
>>> skipped
[('.hidden.png', 'hidden file'), ('scan.pdf', 'unknown image extension .pdf')]
>>> list(expand_inputs(["https://example.com/cat.png"]))
['https://example.com/cat.png']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Names a folder entry may have to be sent; the workers still check what each file really is.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".webp", ".gif", ".heic", ".heif", ".avif", ".tif", ".tiff", ".bmp"}
)

OnSkip = Callable[[Path, str], None]


def skip_reason(path: Path) -> str | None:
    """Why a folder entry is not sent (None: it is sent)."""
    if path.name.startswith("."):
        return "hidden file"
    if path.is_dir():
        return "a folder (folders are not searched recursively)"
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"unknown image extension {path.suffix or '(none)'}"
    return None


def expand_inputs(items: Iterable[str], on_skip: OnSkip | None = None) -> Iterator[str]:
    """Paths and URLs as given; a folder becomes its image files (sorted by name)."""
    for item in items:
        path = Path(item)
        if "://" in item or not path.is_dir():
            yield item
            continue
        for child in sorted(path.iterdir()):
            why = skip_reason(child)
            if why is None:
                yield str(child)
            elif on_skip is not None:
                on_skip(child, why)
