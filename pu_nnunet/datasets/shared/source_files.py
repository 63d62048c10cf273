"""Listing a public dataset's source folders so that no file is dropped without a word.

Real downloads mix spellings of one format (``.jpg``, ``.JPG``, ``.jpeg``; images re-saved as
``.png``): every spelling of the 2D image formats the converters read is accepted, each other
file is recorded with the reason it was skipped and the summary says so, a broken symbolic link
is an error naming it, and an annotation without its image (an *orphan*) becomes a bad case
naming both, so it is listed like any other bad case (or left out with ``--skip-bad``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pu_nnunet.datasets.errors import SourceLayoutError
from pu_nnunet.user_files import check_no_broken_links

# the 2D formats PIL decodes losslessly or as JPEG, every spelling accepted (compared lower-cased)
IMAGE_ENDINGS_2D = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# JPEG is lossy: a mask stored this way holds compression noise around 0 and 255
LOSSY_ENDINGS = (".jpg", ".jpeg")
# the summary names at most this many skipped files per reason
MAX_NAMED_SKIPPED = 5


def image_ending(name: str) -> str | None:
    """The name's 2D image ending as written (``.JPG`` stays ``.JPG``), or None."""
    for ending in IMAGE_ENDINGS_2D:
        if name.lower().endswith(ending):
            return name[-len(ending):]
    return None


def is_lossy(path: str | Path) -> bool:
    return str(path).lower().endswith(LOSSY_ENDINGS)


@dataclass
class SkippedFiles:
    """Files a converter leaves out, each with the reason, for the summary."""

    entries: list[tuple[str, str]] = field(default_factory=list)  # (name relative to the source, reason)

    def add(self, name: str, reason: str) -> None:
        self.entries.append((name, reason))

    def summary(self) -> list[str]:
        """One line: how many files were skipped and why, each reason with the files it applies to."""
        if not self.entries:
            return []
        counts = Counter(reason for _, reason in self.entries)
        parts = []
        for reason, count in counts.items():
            names = [name for name, why in self.entries if why == reason]
            more = f" and {count - MAX_NAMED_SKIPPED} more" if count > MAX_NAMED_SKIPPED else ""
            parts.append(f"{count} {reason} ({', '.join(names[:MAX_NAMED_SKIPPED])}{more})")
        return [f"skipped {len(self.entries)} file(s): " + "; ".join(parts)]


def list_folder(folder: Path) -> list[Path]:
    """The files of ``folder``, sorted; a broken symbolic link among them is a layout error naming
    it (a listing of files would skip that case silently)."""
    check_no_broken_links(folder, SourceLayoutError)
    return sorted(path for path in folder.iterdir() if path.is_file())


def images_by_stem(folder: Path, source: Path, skipped: SkippedFiles, suffix: str = "") -> dict[str, Path]:
    """{name without ``suffix`` and image ending: file} for every image in ``folder`` whose name ends
    in ``suffix`` + an image ending (any spelling); hidden files (``._x.jpg`` from macOS) and other
    files are recorded in ``skipped``. Two files of one name with different endings (``x.jpg``
    and ``x.png``) are refused, naming both: which one is the case is not for us to guess."""
    found: dict[str, Path] = {}
    for path in list_folder(folder):
        relative = str(path.relative_to(source))
        ending = image_ending(path.name)
        if path.name.startswith("."):
            skipped.add(relative, "hidden file(s)")
        elif ending is None:
            skipped.add(relative, f"file(s) without an image ending {'/'.join(IMAGE_ENDINGS_2D)}")
        elif not path.name[: -len(ending)].endswith(suffix):
            skipped.add(relative, f"image(s) not named *{suffix}<ending>")
        else:
            stem = path.name[: -len(ending) - len(suffix)] if suffix else path.name[: -len(ending)]
            if stem in found:
                raise SourceLayoutError(f"{found[stem]} and {path} are two files for one case {stem}; remove or "
                                        "rename one of them")
            found[stem] = path
    return found


def orientation_notes(results: dict[str, dict]) -> list[str]:
    """The summary line for cases whose files carried an EXIF orientation (workers return it)."""
    turned = sorted(case for case, result in results.items() if result.get("exif_orientation", 1) != 1)
    return [f"{len(turned)} image(s) turned upright by their EXIF orientation (their masks alike), e.g. "
            f"{turned[0]}"] if turned else []
