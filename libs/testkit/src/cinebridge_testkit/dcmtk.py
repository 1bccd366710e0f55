"""DCMTK command-line peers as the tests drive them: association profiles for `storescu`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: The SOP classes and DCMTK transfer syntax names the station's tests send in their own syntax.
STILLS_AND_VIDEO = (
    ("CTImageStorage", "LittleEndianImplicit"),
    ("SecondaryCaptureImageStorage", "JPEGBaseline"),
    ("VideoEndoscopicImageStorage", "MPEG4HighProfile/Level4.1"),
)


def storescu_profile(path: Path, profile: str, contexts: Sequence[tuple[str, str]]) -> Path:
    """Write an association configuration for `storescu -xf PATH PROFILE` (DCMTK's storescu.cfg
    format) proposing each (SOP class, transfer syntax) pair as a presentation context of its
    own. Without one, storescu proposes only the uncompressed syntaxes and would convert or
    refuse the rest; with it each file travels in its own syntax, so the receiver's copy can be
    compared byte for byte."""
    syntaxes = list(dict.fromkeys(ts for _, ts in contexts))
    lines = ["[[TransferSyntaxes]]"]
    for n, ts in enumerate(syntaxes, 1):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", f"[{profile}]"]
    for n, (sop, ts) in enumerate(contexts, 1):
        lines.append(f"PresentationContext{n} = {sop}\\TS{syntaxes.index(ts) + 1}")
    lines += ["[[Profiles]]", f"[{profile}]", f"PresentationContexts = {profile}"]
    path.write_text("\n".join(lines) + "\n")
    return path
