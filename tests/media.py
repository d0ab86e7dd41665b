"""Test media for the streaming tests: real clips from Debian packages, synthetic clips, broken files.

Not a test module: the streaming tests import it (``from media import make_clip``). The live
loopback sender (``LoopbackSender``, ``free_port``) lives in ``tests/loopback.py`` and is
re-exported here.

Real clips (``debian_file``), as PyAV 18.1 / FFmpeg 8 read them (Debian bookworm packages):

``cockatoo.mp4`` from ``python3-imageio`` 2.4.1-5 (3.1 MB .deb), at
``usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4`` (729 kB):
    H.264 High 4:4:4 Predictive, yuv444p, 1280x720, B-frames, 280 frames at 20 fps (time base
    1/10240, pts step 512, 14.0 s); audio MP3, 16 kHz mono, 24 kbit/s, 388 packets of 576 samples,
    first packet pts -1105 (encoder delay trimmed by an edit list), 13.968 s from first to last packet.
``realshort.mp4`` from ``python3-imageio``, in the same folder (97 kB):
    H.264 High, yuv420p, 320x240, no B-frames, 36 frames at 45000/1499 (~30.02) fps (time base
    1/90000, pts step 2998, 1.199 s); audio AAC LC, 48 kHz mono, 55 packets, 1.186 s.
``movie.avi`` from ``kphotoalbum`` 5.9.1-1 (12.2 MB .deb, 20 MB unpacked), at
``usr/share/kphotoalbum/demo/movie.avi`` (492 kB, a Canon camera clip):
    MJPEG, yuvj422p, 160x120, 68 frames at 500000/33333 (~15.0) fps (time base 33333/500000, pts 0..67);
    audio pcm_u8, 11024 Hz mono, 5 packets (up to 11024 samples each), 4.533 s.

Rotation (``make_clip(rotation=...)``): ``stream.set_display_rotation(d)`` writes the display matrix,
and the decoder hands it back on every frame as ``frame.rotation``: the same ``d``, counter-clockwise
degrees, normalised to [-180, 180) (90 -> 90, -90 -> -90, 270 -> -90, 180 -> -180), in mp4, mov and
mkv alike. To show a frame upright, rotate it ``frame.rotation`` degrees counter-clockwise, i.e.
``np.rot90(image, k=frame.rotation // 90)``; a phone held upright typically records -90. The
stream's coded size (``codec_context.width/height``) stays the unrotated one.

Broken inputs, and what PyAV raises on them:

- ``empty_file``: ``av.open`` raises ``av.error.InvalidDataError`` (errno AVERROR_INVALIDDATA).
- ``truncate`` of an mp4 written without faststart (the moov index is at the end): ``av.open``
  raises ``InvalidDataError`` ("moov atom not found"). With ``make_clip(..., faststart=True)`` the
  file opens and decoding ends early: the packet cut in two may raise ``InvalidDataError`` from
  ``stream.decode`` (always without frame threading; with ``thread_type="AUTO"`` FFmpeg may drop it
  silently). A truncated mkv opens and decodes up to the cut with no exception. Cut before the end
  of the first keyframe, no frame decodes at all.
- ``corrupt_middle`` (H.264 in mp4/mov/mkv): each damaged packet makes ``stream.decode(packet)``
  raise ``InvalidDataError`` and loses exactly that frame; decoding goes on with the next packet,
  with or without frame threading. FFmpeg logs "Invalid NAL unit size" on stderr.
- ``audio_only``: opens; ``container.streams.video`` is empty.
- ``unknown_codec``: opens; the video stream has ``type == "video"`` (time base, rate) but
  ``codec_context is None`` (so ``stream.codec_context.name`` is an ``AttributeError``), and
  ``stream.decode(packet)`` / ``container.decode(video=0)`` raise ``av.error.DecoderNotFoundError``
  ("Decoder not found").
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from loopback import LoopbackSender, free_port
from requirements import unavailable

__all__ = [
    "AUDIO_RATE",
    "Clip",
    "Corruption",
    "LoopbackSender",
    "audio_only",
    "corrupt_middle",
    "debian_file",
    "decode_count",
    "empty_file",
    "free_port",
    "make_clip",
    "media_cache",
    "pattern",
    "truncate",
    "unknown_codec",
]

AUDIO_RATE = 48000
_TONE_HZ = 440.0
# Frames whose pts are not a whole number of ticks would be rounded by the muxer; 1/90000 holds every
# common frame rate exactly (24, 25, 30, 30000/1001...). Matroska always stores milliseconds, and the
# MPEG-4 part 2 encoder refuses a time base denominator above 65535.
_TIME_BASES = {".mkv": Fraction(1, 1000), ".webm": Fraction(1, 1000)}
_CODEC_TIME_BASES = {"mpeg4": Fraction(1, 30000)}
_DEFAULT_TIME_BASE = Fraction(1, 90000)
_AUDIO_CODECS = {
    "aac": "aac",
    "ac3": "ac3",
    "mp3": "libmp3lame",
    "pcm_s16le": "pcm_s16le",
    "opus": "libopus",
    "vorbis": "vorbis",
}


# --- real clips ---------------------------------------------------------------------------------


def media_cache() -> Path:
    """The folder Debian packages are unpacked into: ``$SPGIM_TEST_MEDIA`` or ``~/.cache/spgim/test-media``."""
    if os.environ.get("SPGIM_TEST_MEDIA"):
        return Path(os.environ["SPGIM_TEST_MEDIA"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "spgim" / "test-media"


def debian_file(package: str, member: str) -> Path:
    """A file shipped in a Debian package, downloaded and unpacked once into :func:`media_cache`.

    Runs ``apt-get download PACKAGE`` and ``dpkg -x`` the first time; later calls (from any process)
    find the unpacked tree. Two processes asking at once serialise on a lock file, and the tree is
    moved into place with one rename, so a reader never sees half of it.

    Args:
        package: Debian package name, e.g. ``"python3-imageio"``.
        member: file name (``"cockatoo.mp4"``) or the end of its path inside the package.

    Returns: the path of the unpacked file.

    Skips the calling test when apt-get or dpkg is missing, the download fails (no network, no
    package lists) or the package has no such file; fails it instead in CI (:func:`unavailable`).
    """
    cache = media_cache()
    tree = cache / package
    if not tree.is_dir():
        for tool in ("apt-get", "dpkg"):
            if shutil.which(tool) is None:
                unavailable(f"{tool} not found: cannot fetch {member} from the Debian package {package}")
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / f".{package}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not tree.is_dir():
                error = _unpack(package, cache, tree)
                if error:
                    unavailable(f"cannot fetch the Debian package {package}: {error}")
    found = [path for path in sorted(tree.rglob(Path(member).name)) if path.as_posix().endswith(member)]
    if not found:
        unavailable(f"the Debian package {package} has no file {member}")
    return found[0]


def _unpack(package: str, cache: Path, tree: Path) -> str:
    """Download and unpack ``package`` into ``tree``; returns an error message, empty on success."""
    with tempfile.TemporaryDirectory(dir=cache, prefix=f".{package}-") as work:
        try:
            download = subprocess.run(
                ["apt-get", "download", package], cwd=work, capture_output=True, text=True, timeout=600, check=False
            )
            debs = sorted(Path(work).glob("*.deb"))
            if download.returncode != 0 or not debs:
                lines = [line for line in download.stderr.splitlines() if line.startswith("E:")]
                return (lines or download.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
            unpacked = Path(work) / "tree"
            subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], capture_output=True, timeout=300, check=True)
        except (OSError, subprocess.SubprocessError) as error:
            return str(error)
        unpacked.rename(tree)
    return ""


# --- synthetic clips ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """What :func:`make_clip` wrote.

    ``pts`` are the video frames' presentation timestamps in ``time_base``, in display order, as
    written. mp4, mov and mkv give them back unchanged, in that time base; other containers may
    rescale them (AVI reads back in 1/600 at 24 fps), so compare :attr:`times`, which are exact.
    ``size`` is the coded (unrotated) ``(width, height)``.
    """

    path: Path
    size: tuple[int, int]
    fps: Fraction
    time_base: Fraction
    pts: tuple[int, ...]
    codec: str
    pix_fmt: str
    rotation: int
    audio_codec: str | None
    audio_packets: int
    audio_samples: int

    @property
    def times(self) -> tuple[Fraction, ...]:
        """Frame times in seconds, exact."""
        return tuple(p * self.time_base for p in self.pts)

    @property
    def duration(self) -> Fraction:
        """Seconds from the first frame's start to the last frame's end (last frame lasts 1/fps)."""
        return (self.pts[-1] - self.pts[0]) * self.time_base + 1 / self.fps

    @property
    def audio_seconds(self) -> float:
        """Length of the encoded tone in seconds (0 without audio)."""
        return self.audio_samples / AUDIO_RATE


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the synthetic clip: ``(height, width, 3)`` uint8 RGB.

    A red/green ramp drifting right and down, a white square sliding across, and a pure red marker
    in the top-left corner: every frame differs, and a wrong rotation or flip shows.
    """
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (xs * 3 + index * 6) % 256
    image[..., 1] = (ys * 3 + index * 2) % 256
    image[..., 2] = 96
    side = max(2, min(width, height) // 4)
    x = (index * 3) % max(1, width - side)
    y = (index * 2) % max(1, height - side)
    image[y : y + side, x : x + side] = 255
    mark = max(1, min(width, height) // 8)
    image[:mark, :mark] = (255, 0, 0)
    return image


def make_clip(
    path: str | os.PathLike[str],
    *,
    size: tuple[int, int] = (96, 64),
    frames: int = 24,
    fps: int | Fraction = 24,
    codec: str = "libx264",
    rotation: int = 0,
    audio: str | None = None,
    vfr: bool = False,
    times: Sequence[float] | None = None,
    pix_fmt: str | None = None,
    faststart: bool = False,
    seed: int = 0,
) -> Clip:
    """Write a small deterministic clip with PyAV: a moving :func:`pattern`, maybe a tone.

    Args:
        path: output file; the container follows the extension (``.mp4``, ``.mov``, ``.mkv``...).
        size: coded ``(width, height)``; odd sides are fine (x264/x265 then encode yuv444p).
        frames: number of video frames.
        fps: nominal frame rate; with ``vfr`` the highest rate.
        codec: video encoder (``libx264``, ``libx265``, ``libvpx-vp9``, ``mjpeg``, ``mpeg4``...).
        rotation: counter-clockwise degrees written as the stream's display matrix (0 writes none).
        audio: ``None``, ``"aac"``, ``"ac3"``, ``"mp3"``, ``"pcm_s16le"``, ``"opus"`` or ``"vorbis"``: a 440 Hz
            tone at 48 kHz mono lasting as long as the video.
        vfr: irregular timestamps: each gap is 1, 2 or 3 nominal frame durations, drawn from ``seed``.
        times: each frame's presentation time in seconds (``frames`` of them), gaps and jumps as given.
        pix_fmt: encoder pixel format; default yuv420p, or yuv444p for x264/x265 at an odd size.
        faststart: put the mp4/mov index at the front (so a truncated copy still opens).
        seed: seed of the ``vfr`` gaps.

    Returns: a :class:`Clip` describing what was written.
    """
    path = Path(path)
    width, height = size
    if codec == "libx265" and (width < 64 or height < 32):
        # Smaller pictures make the x265 in PyAV 18.1's wheel corrupt its heap and abort the process.
        raise ValueError(f"libx265 needs at least 64x32 pixels, got {width}x{height}")
    fps = Fraction(fps)
    time_base = _TIME_BASES.get(path.suffix.lower()) or _CODEC_TIME_BASES.get(codec, _DEFAULT_TIME_BASE)
    step = 1 / (fps * time_base)
    if vfr:
        gaps = np.random.default_rng(seed).integers(1, 4, max(0, frames - 1))
        ticks = np.concatenate([[0], np.cumsum(gaps)]).tolist()
    else:
        ticks = list(range(frames))
    pts = tuple(round(k * step) for k in ticks)
    if times is not None:
        if len(times) != frames:
            raise ValueError(f"{len(times)} times for {frames} frames")
        pts = tuple(round(Fraction(t).limit_denominator(10**6) / time_base) for t in times)
    if pix_fmt is None:
        odd = width % 2 == 1 or height % 2 == 1
        pix_fmt = "yuv444p" if odd and codec in ("libx264", "libx265") else "yuv420p"
        if codec == "mjpeg":
            pix_fmt = "yuvj444p" if odd else "yuvj420p"
    container_options = {"movflags": "+faststart"} if faststart else {}
    audio_packets = audio_samples = 0
    with av.open(str(path), "w", container_options=container_options) as container:
        video = container.add_stream(codec, rate=fps, options=_video_options(codec))
        assert isinstance(video, av.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        video.codec_context.time_base = time_base
        video.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)
        tone = _ToneWriter(container, audio) if audio else None
        for p, tick in zip(pts, ticks, strict=True):
            if tone is not None:
                tone.write_until(float(p * time_base))
            frame = av.VideoFrame.from_ndarray(pattern(tick, width, height), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if tone is not None:
            tone.write_until(float((pts[-1] - pts[0]) * time_base + 1 / fps), flush=True)
            audio_packets, audio_samples = tone.packets, tone.samples
    return Clip(
        path=path,
        size=(width, height),
        fps=fps,
        time_base=time_base,
        pts=pts,
        codec=codec,
        pix_fmt=pix_fmt,
        rotation=rotation,
        audio_codec=audio,
        audio_packets=audio_packets,
        audio_samples=audio_samples,
    )


def _video_options(codec: str) -> dict[str, str]:
    # veryfast keeps B-frames, so decode order differs from display order as in real clips.
    if codec == "libx264":
        return {"preset": "veryfast"}
    if codec == "libx265":
        return {"preset": "veryfast", "x265-params": "log-level=error"}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8"}
    return {}


class _ToneWriter:
    """Encodes a 440 Hz sine in 1024-sample frames into an audio stream of ``container``."""

    def __init__(self, container: av.container.OutputContainer, audio: str) -> None:
        if audio not in _AUDIO_CODECS:
            raise ValueError(f"audio must be one of {sorted(_AUDIO_CODECS)}, got {audio!r}")
        self.container = container
        # FFmpeg's own Vorbis encoder (PyAV's wheel has no libvorbis) is experimental and stereo only.
        options = {"strict": "experimental"} if audio == "vorbis" else {}
        self.layout = "stereo" if audio == "vorbis" else "mono"
        stream = container.add_stream(_AUDIO_CODECS[audio], rate=AUDIO_RATE, options=options)
        assert isinstance(stream, av.AudioStream)
        stream.layout = self.layout
        self.stream = stream
        self.samples = 0
        self.packets = 0

    def write_until(self, seconds: float, *, flush: bool = False) -> None:
        """Encode the tone up to ``seconds``; with ``flush``, drain the encoder too."""
        end = round(seconds * AUDIO_RATE)
        while self.samples < end:
            count = min(1024, end - self.samples)
            t = (self.samples + np.arange(count)) / AUDIO_RATE
            wave = (0.3 * np.sin(2 * np.pi * _TONE_HZ * t)).astype(np.float32)[None, :]
            if self.layout == "stereo":
                wave = np.repeat(wave, 2, axis=0)
            frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout=self.layout)
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self.samples, Fraction(1, AUDIO_RATE)
            self._mux(self.stream.encode(frame))
            self.samples += count
        if flush:
            self._mux(self.stream.encode(None))

    def _mux(self, packets: list[av.Packet]) -> None:
        self.packets += len(packets)
        self.container.mux(packets)


# --- broken inputs ------------------------------------------------------------------------------


def empty_file(path: str | os.PathLike[str]) -> Path:
    """A zero-byte file; ``av.open`` raises ``InvalidDataError`` on it."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def truncate(src: str | os.PathLike[str], dst: str | os.PathLike[str], fraction: float) -> Path:
    """Copy the first ``fraction`` (0..1) of the bytes of ``src`` to ``dst``."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


@dataclass(frozen=True)
class Corruption:
    """What :func:`corrupt_middle` damaged and how many frames survive decoding."""

    path: Path
    packets: tuple[int, ...]  # decode-order indices of the damaged video packets
    frames_in: int  # frames decoded from the source
    frames_out: int  # frames decoded from the damaged copy, errors caught per packet
    errors: int  # packets whose decode raised

    @property
    def lost(self) -> int:
        """Frames the damage cost."""
        return self.frames_in - self.frames_out


def corrupt_middle(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, count: int = 3) -> Corruption:
    """Copy ``src`` to ``dst`` with ``count`` non-key video packets in the middle damaged.

    The 4-byte NAL length that starts each H.264 packet in mp4/mov/mkv is overwritten with a huge
    value: the container index is untouched (the file opens and demuxes), but the decoder rejects
    those packets with ``InvalidDataError`` and the frames are lost. Then decodes the copy with
    errors caught per packet, as the streaming reader does, to count what survives.

    Raises: ``ValueError`` when the video is not H.264 or has too few non-key packets in its middle.
    """
    src, dst = Path(src), Path(dst)
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        if stream.codec_context.name != "h264":
            raise ValueError(f"corrupt_middle damages H.264 packets; {src} holds {stream.codec_context.name}")
        packets = [(p.pos, p.size, p.is_keyframe) for p in container.demux(stream) if p.size and p.pos is not None]
    middle = range(len(packets) // 3, 2 * len(packets) // 3)
    chosen = tuple(i for i in middle if not packets[i][2])[:count]
    if len(chosen) < count:
        raise ValueError(f"{src} has fewer than {count} non-key video packets in its middle third")
    data = bytearray(src.read_bytes())
    for index in chosen:
        position = int(packets[index][0] or 0)
        data[position : position + 4] = b"\x7f\xff\xff\xff"
    dst.write_bytes(bytes(data))
    frames_in, _ = decode_count(src)
    frames_out, errors = decode_count(dst)
    return Corruption(dst, chosen, frames_in, frames_out, errors)


def decode_count(path: str | os.PathLike[str], *, threads: bool = True) -> tuple[int, int]:
    """Decode the first video stream of ``path``, catching errors per packet: ``(frames, errors)``."""
    frames = errors = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                frames += len(stream.decode(packet))
            except av.error.InvalidDataError:
                errors += 1
    return frames, errors


def audio_only(path: str | os.PathLike[str], *, seconds: float = 1.0) -> Path:
    """A file with an AAC tone and no video stream (``.m4a``, ``.mp4``, ``.mkv``...)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        tone = _ToneWriter(container, "aac")
        tone.write_until(seconds, flush=True)
    return path


def unknown_codec(path: str | os.PathLike[str]) -> Path:
    """An mkv whose video track's CodecID no FFmpeg decoder knows (``V_SPGIM/UNKNOWN``), plus AAC audio.

    The file opens and demuxes; the video stream has no codec context and decoding it raises
    ``av.error.DecoderNotFoundError``.
    """
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise ValueError(f"unknown_codec writes Matroska; give a .mkv path, not {path.name}")
    make_clip(path, frames=6, audio="aac")
    data = path.read_bytes()
    # Same length as the original CodecID, so no EBML element size changes.
    original, patched = b"V_MPEG4/ISO/AVC", b"V_SPGIM/UNKNOWN"
    if data.count(original) != 1:
        raise RuntimeError(f"expected one {original.decode()} CodecID in {path}")
    path.write_bytes(data.replace(original, patched))
    return path
