"""What each video transfer syntax allows (PS3.5 8.2.5-8.2.8), and whether a probed stream fits.

The limits come from docs/dicom.md (PS3.5 Tables 8-2 .. 8-5) and what dciodvfy checks
(§1.7). A stream that fits is only remuxed or encapsulated as is; one that does not is
transcoded to the `EncodeTarget` chosen here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction

from .probe import VideoProbe

MPEG2_MPML = "1.2.840.10008.1.2.4.100"
MPEG2_MPHL = "1.2.840.10008.1.2.4.101"
H264_HP41 = "1.2.840.10008.1.2.4.102"
H264_BD = "1.2.840.10008.1.2.4.103"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
VIDEO_SYNTAXES = (MPEG2_MPML, MPEG2_MPHL, H264_HP41, H264_BD)

NTSC = Fraction(30000, 1001)
FILM = Fraction(24000, 1001)
NTSC60 = Fraction(60000, 1001)
#: Frame rates of PS3.5 Tables 8-2/8-5 (H.264 L4.1 and MPEG-2 HL).
STANDARD_RATES = (
    FILM,
    Fraction(24),
    Fraction(25),
    NTSC,
    Fraction(30),
    Fraction(50),
    NTSC60,
    Fraction(60),
)
#: A "High Profile" decoder decodes Main and Constrained Baseline streams too (ITU-T H.264 A.2).
H264_PROFILES = frozenset({"High", "Main", "Constrained Baseline"})
#: MPEG audio a DICOM MP4/TS may carry (PS3.5 8.2.12); MPEG-2 video allows MP3 only (8.2.5).
H264_AUDIO = {"mp4": {"aac", "mp3", "mp2"}, "mpegts": {"aac", "mp3", "mp2", "ac3"}}
MPEG2_AUDIO = {"mp3"}
H264_CONTAINERS = ("mp4", "mpegts")
MPEG2_CONTAINERS = ("mpegts", "mpeg", "mp4", "mpegvideo")


@dataclass(frozen=True)
class EncodeTarget:
    """A compliant stream to transcode to."""

    ts_uid: str
    codec: str  # PyAV encoder
    width: int  # output picture (source scaled into it, letterboxed if aspect differs)
    height: int
    rate: Fraction
    container: str  # "mp4" or "mpegts"
    options: dict[str, str]
    bit_rate: int | None = None
    #: Fill the exact size (letterbox, upscale allowed): MP@HL and BD allow only fixed sizes.
    exact_size: bool = False


def near(rate: Fraction, target: Fraction, tolerance: float = 0.0003) -> bool:
    """Equal within 0.03 %: 29.97 and 30 differ by 0.1 % and must stay apart."""
    return abs(float(rate) - float(target)) <= tolerance * float(target)


def standard_rate(rate: Fraction) -> Fraction | None:
    return next((r for r in STANDARD_RATES if near(rate, r)), None)


def container_for(ts_uid: str) -> str:
    """The container we write: MP4 for H.264 (playable in browsers), MPEG-TS for MPEG-2."""
    return "mp4" if ts_uid in (H264_HP41, H264_BD) else "mpegts"


def misfits(p: VideoProbe, ts_uid: str) -> list[str]:
    """Why the stream's coding breaks `ts_uid` (empty: it fits and needs no transcode)."""
    reasons = []
    if p.vfr:
        # Frame Time states one duration for every frame (PS3.3 C.7.6.5): resample.
        reasons.append(f"variable frame rate (average {float(p.rate):.3f} fps)")
    if p.rotation:
        # DICOM has no display rotation: Rows and Columns are the picture as shown (PS3.3
        # C.7.6.3), so the pixels themselves are turned upright.
        reasons.append(f"shown turned by {p.rotation} degrees (display matrix)")
    if ts_uid in (H264_HP41, H264_BD):
        reasons += _h264_misfits(p)
        if ts_uid == H264_BD and not reasons:
            reasons += _bd_misfits(p)
        return reasons
    if ts_uid in (MPEG2_MPML, MPEG2_MPHL):
        return reasons + _mpeg2_misfits(p, high=ts_uid == MPEG2_MPHL)
    raise ValueError(f"not a supported video transfer syntax: {ts_uid}")


def _h264_misfits(p: VideoProbe) -> list[str]:
    reasons = []
    if p.codec != "h264":
        return [f"codec {p.codec} is not H.264"]
    if p.profile not in H264_PROFILES:
        reasons.append(f"H.264 profile {p.profile} is beyond High")
    if p.level is None or p.level > 41:
        reasons.append(f"H.264 level {p.level} is above 4.1")
    if p.pix_fmt not in ("yuv420p", "yuvj420p"):
        reasons.append(f"pixel format {p.pix_fmt} is not 8-bit 4:2:0")
    if p.sar != 1:
        # PS3.5 8.2.7: Pixel Aspect Ratio absent, aspect_ratio_idc 1 (square) if present.
        reasons.append(f"non-square pixels (aspect {p.sar.numerator}:{p.sar.denominator})")
    macroblocks = -(-p.width // 16) * -(-p.height // 16)
    if macroblocks > 8192 or macroblocks * float(p.rate) > 245760 * 1.001:
        reasons.append(f"{p.width}x{p.height} at {float(p.rate):.2f} fps exceeds level 4.1")
    if standard_rate(p.rate) is None:
        reasons.append(f"frame rate {float(p.rate):.3f} is not a standard rate")
    return reasons


#: Blu-ray video's highest bit rate (BD-ROM: 40 Mbit/s for the video elementary stream).
BD_MAX_BIT_RATE = 40_000_000


def _bd_misfits(p: VideoProbe) -> list[str]:
    """PS3.5 8.2.7 BD-compatible: High (or Main) profile at level 4.1 or below, a Table 8-4
    format, and no more than Blu-ray's video bit rate."""
    reasons = []
    if p.profile not in ("High", "Main"):
        reasons.append(f"H.264 profile {p.profile} is not a BD profile")
    if not _bd_combination(p):
        scan = "i" if p.interlaced else "p"
        reasons.append(f"{p.width}x{p.height}{scan} at {float(p.rate):.3f} fps is not a BD format")
    if p.bit_rate > BD_MAX_BIT_RATE:
        reasons.append(f"bit rate {p.bit_rate / 1e6:.1f} Mbit/s is above BD's 40 Mbit/s")
    return reasons


def _bd_combination(p: VideoProbe) -> bool:
    """PS3.5 Table 8-4 (BD-compatible)."""
    allowed: tuple[Fraction, ...]
    if (p.width, p.height) == (1920, 1080):
        allowed = (Fraction(25), NTSC) if p.interlaced else (Fraction(24), FILM)
    elif (p.width, p.height) == (1280, 720) and not p.interlaced:
        allowed = (Fraction(50), NTSC60, Fraction(24), FILM)
    else:
        return False
    return any(near(p.rate, r) for r in allowed)


def _mpeg2_misfits(p: VideoProbe, *, high: bool) -> list[str]:
    if p.codec != "mpeg2video":
        return [f"codec {p.codec} is not MPEG-2 video"]
    reasons = []
    if p.profile not in ("Main", None):
        reasons.append(f"MPEG-2 profile {p.profile} is not Main")
    if p.pix_fmt != "yuv420p":
        reasons.append(f"pixel format {p.pix_fmt} is not 4:2:0")
    rate = standard_rate(p.rate)
    if high and p.sar != 1:
        # PS3.5 8.2.6: Pixel Aspect Ratio absent at MP@HL (square pixels, 16:9 pictures).
        reasons.append(f"non-square pixels (aspect {p.sar.numerator}:{p.sar.denominator})")
    if high:
        sizes = {
            (1920, 1080): (Fraction(25), NTSC, Fraction(30)),
            (1280, 720): (Fraction(25), NTSC, Fraction(30), Fraction(50), NTSC60, Fraction(60)),
        }
        if rate not in sizes.get((p.width, p.height), ()):
            reasons.append(f"{p.width}x{p.height} at {float(p.rate):.2f} fps is not MP@HL")
    else:
        limit = 576 if rate == 25 else 480
        if rate not in (Fraction(25), NTSC, Fraction(30)) or p.width > 720 or p.height > limit:
            reasons.append(f"{p.width}x{p.height} at {float(p.rate):.2f} fps is not MP@ML")
    return reasons


def container_ok(p: VideoProbe, ts_uid: str) -> bool:
    allowed = H264_CONTAINERS if ts_uid in (H264_HP41, H264_BD) else MPEG2_CONTAINERS
    return p.container in allowed


def audio_allowed(codec: str, ts_uid: str, container: str) -> bool:
    if ts_uid in (MPEG2_MPML, MPEG2_MPHL):
        return codec in MPEG2_AUDIO
    return codec in H264_AUDIO.get(container, set())


def encode_target(p: VideoProbe, ts_uid: str, preset: str) -> EncodeTarget:
    """The compliant stream closest to the source (size, rate) for `ts_uid`."""
    rate = source_rate(p)
    # Encode square pixels, turned upright.
    width, height = p.upright_size
    p = dataclasses.replace(p, width=width, height=height, sar=Fraction(1), rotation=0)
    if ts_uid == H264_HP41:
        if p.interlaced and standard_rate(rate * 2) in (Fraction(50), NTSC60, Fraction(60)):
            rate = rate * 2  # deinterlaced one frame per field: the motion of the source
        width, height = fit(p.width, p.height, 1920, 1080)
        if -(-width // 16) * -(-height // 16) * float(rate) > 245760:
            width, height = fit(p.width, p.height, 1280, 720)
        return EncodeTarget(ts_uid, "libx264", width, height, rate, "mp4", _x264(preset, rate, ""))
    if ts_uid == H264_BD:
        ntsc_like = rate in (NTSC, NTSC60, Fraction(30), Fraction(60))
        rate = NTSC60 if ntsc_like else Fraction(50)
        bd = ":bluray-compat=1:nal-hrd=vbr:vbv-maxrate=40000:vbv-bufsize=30000"
        return EncodeTarget(
            ts_uid, "libx264", 1280, 720, rate, "mp4", _x264(preset, rate, bd), exact_size=True
        )
    if ts_uid == MPEG2_MPML:
        if rate not in (Fraction(25), NTSC, Fraction(30)):
            rate = Fraction(25) if rate == Fraction(50) else NTSC
        width, height = fit(p.width, p.height, 720, 576 if rate == 25 else 480)
        return EncodeTarget(
            ts_uid,
            "mpeg2video",
            width,
            height,
            rate,
            "mpegts",
            _mpeg2_options(rate, 1835008),
            6_000_000,
        )
    if ts_uid == MPEG2_MPHL:
        if rate in (Fraction(50), NTSC60, Fraction(60)):
            return EncodeTarget(
                ts_uid,
                "mpeg2video",
                1280,
                720,
                rate,
                "mpegts",
                _mpeg2_options(rate, 7340032),
                20_000_000,
                exact_size=True,
            )
        rate = rate if rate in (Fraction(25), NTSC, Fraction(30)) else Fraction(25)
        return EncodeTarget(
            ts_uid,
            "mpeg2video",
            1920,
            1080,
            rate,
            "mpegts",
            _mpeg2_options(rate, 9781248),
            25_000_000,
            exact_size=True,
        )
    raise ValueError(f"not a supported video transfer syntax: {ts_uid}")


def _x264(preset: str, rate: Fraction, extra: str) -> dict[str, str]:
    keyint = max(1, round(float(rate) * 2))
    return {
        "preset": preset,
        "profile": "high",
        "level": "4.1",
        "crf": "20",
        "x264-params": f"keyint={keyint}:min-keyint=1:log-level=error{extra}",
    }


def _mpeg2_options(rate: Fraction, vbv_bits: int) -> dict[str, str]:
    return {
        "g": str(round(float(rate) / 2)),
        "bf": "2",
        "bufsize": str(vbv_bits),
        "maxrate": str(9_800_000 if vbv_bits <= 1835008 else 40_000_000),
    }


def source_rate(p: VideoProbe) -> Fraction:
    """The standard rate a transcode starts from: the stream's own; for a variable rate the
    rate its timestamps tick at when that is standard; else the nearest of 25/29.97/30."""
    if p.vfr and p.base_rate is not None and (base := standard_rate(p.base_rate)):
        return base
    return standard_rate(p.rate) or _nearest_rate(p.rate)


def interlaced_target(p: VideoProbe, target: EncodeTarget) -> bool:
    """Whether a transcode keeps the fields (MPEG-2 at the source's frame rate) rather than
    deinterlacing: MP@ML and 1080-line MP@HL are interlaced formats."""
    return (
        p.interlaced
        and target.codec == "mpeg2video"
        and near(target.rate, p.rate, 0.001)
        and target.height in (480, 576, 1080)
    )


def _nearest_rate(rate: Fraction) -> Fraction:
    """Odd rates (15, 12.5, variable): the nearest standard rate not above 30 (smooth, small)."""
    candidates = (Fraction(25), NTSC, Fraction(30))
    return min(candidates, key=lambda r: abs(float(r) - float(rate)))


def fit(
    width: int, height: int, box_w: int, box_h: int, *, upscale: bool = False
) -> tuple[int, int]:
    """Scale into a box keeping the aspect ratio, even dimensions (no upscale unless asked)."""
    scale = min(box_w / width, box_h / height)
    if not upscale:
        scale = min(1.0, scale)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)
