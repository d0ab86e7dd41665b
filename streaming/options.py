"""A matting job's options, each defined once: one frozen dataclass per group, which is also its flags.

:class:`Outputs` (what is written), :class:`EngineOptions` (which engine runs the model), :class:`MattingOptions`
(how frames are matted), :class:`SourceOptions` (how the input is read), :class:`EncodeOptions` (how outputs
are encoded) and :class:`PreviewOptions` (where the live preview page is served). ``spgim matte``,
``spgim bench --video``, ``spgim eval --video`` and the scripts declare them with ``add_arguments(parser)`` and
read them with ``from_args(args)`` (:class:`spgim.option_groups.OptionGroup`); :func:`spgim.streaming.job.matte_video`
takes the dataclasses. A matting value left None is the export's (:class:`spgim.stream_defaults.StreamDefaults`,
filled by the runtime), and its help says what the shipped configurations record. Importing this module loads no
engine: ``spgim --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from spgim.errors import SpgimError
from spgim.option_groups import NUMBER, SECONDS, WHOLE, Flag, OptionGroup, ValueType, flag
from spgim.stream_defaults import StreamDefaults, stated_defaults

from .network import STARTUP_TIMEOUT_S

if TYPE_CHECKING:
    from collections.abc import Callable

    from spgim.runtime.matting import Matter

    from .remote import TritonMatter

Destination = str | Path
BACKGROUND = flag("--background", "behind the composite: green (default), #RRGGBB, an image or a video (looped)")


@dataclass(frozen=True)
class Outputs(OptionGroup):
    """What a job writes: at least one of the composite, the alpha and the foreground.

    Attributes:
        composite: composite videos or streams (one path or URL, or several).
        alpha: the greyscale alpha video, PNG folder or stream URL.
        foreground: the foreground with alpha (ProRes 4444 .mov, VP9 .webm, or a PNG folder).
        background: what the composite shows behind the foreground.
    """

    composite: Destination | Sequence[Destination] = field(
        default=(),
        metadata=flag(
            "--output",
            "composite video (.mp4/.mkv/.mov: H.264; .webm: VP9; a folder: PNGs), or a stream to publish live "
            "(rtmp://, rtsp://, srt://, udp://: H.264 zero-latency, reconnected when the destination drops); "
            "repeat to write several, e.g. a stream and a recording",
            repeat=True,
        ),
    )
    alpha: Destination | None = field(
        default=None, metadata=flag("--alpha", "greyscale alpha video (or PNG folder, or a stream URL)")
    )
    foreground: Destination | None = field(
        default=None,
        metadata=flag("--foreground", "foreground with alpha: .mov ProRes 4444, .webm VP9, or a PNG folder"),
    )
    background: str = field(default="green", metadata=BACKGROUND)

    def __post_init__(self) -> None:
        if isinstance(self.composite, (str, Path)):
            object.__setattr__(self, "composite", (self.composite,))
        else:
            object.__setattr__(self, "composite", tuple(self.composite))
        if not self.by_kind():
            raise SpgimError("nothing to write: give --output, --alpha or --foreground")

    def by_kind(self) -> dict[str, list[Destination]]:
        """Each kind asked for (``composite``, ``alpha``, ``foreground``) and its destinations."""
        composite = [self.composite] if isinstance(self.composite, (str, Path)) else list(self.composite)
        asked: dict[str, list[Destination | None]] = {
            "composite": list(composite),
            "alpha": [self.alpha],
            "foreground": [self.foreground],
        }
        return {kind: [path for path in paths if path] for kind, paths in asked.items() if any(paths)}


@dataclass(frozen=True)
class EngineOptions(OptionGroup):
    """Which engine runs the model, and how many frames and threads it is given.

    Attributes:
        backend: ``"auto"`` or a key of :data:`spgim.runtime.registry.BACKENDS`.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"``, ``"int8"`` or ``"auto"``.
        threads: CPU threads for the model (0: the backend's choice).
        batch: frames per model call for recorded input.
        server: ``HOST:PORT``, the gRPC endpoint of an ``spgim serve`` that runs the model instead of this process
            (:class:`spgim.streaming.remote.TritonMatter`; None: the model runs here).
    """

    backend: str = field(
        default="auto",
        metadata=flag(
            "--backend",
            "auto (default: the fastest measured on this machine, ranking cached next to the model), onnxruntime, "
            "openvino, aotinductor, torchscript, tensorrt, onnxruntime-cuda, onnxruntime-trt, torchscript-cuda",
        ),
    )
    precision: str = field(
        default="fp32",
        metadata=flag(
            "--precision",
            "fp32 (default), fp16, bf16, int8, or auto: the fastest measured whose alpha stays within 5e-3 mean of "
            "fp32 (int8 only where its export passed its accuracy gate)",
        ),
    )
    threads: int = field(
        default=0, metadata=flag("--threads", "CPU threads for the model (0, the default: the backend's choice)", WHOLE)
    )
    batch: int = field(
        default=1, metadata=flag("--batch", "frames per model call for recorded input (default {default})", WHOLE)
    )
    server: str | None = field(
        default=None,
        metadata=flag(
            "--server",
            "run the model on this spgim serve (Triton gRPC) instead of locally; --model is then not needed",
            metavar="HOST:PORT",
        ),
    )

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise SpgimError(f"threads must be 0 (the backend's choice) or more, got {self.threads}")
        if self.batch < 1:
            raise SpgimError(f"batch must be at least 1, got {self.batch}")
        if self.server is not None and not self.server.strip():
            raise SpgimError("--server must be HOST:PORT, got an empty value")


# The engine's fields that commands running the model only locally declare (``add_arguments(..., only=...)``).
LOCAL_ENGINE = ("backend", "precision", "threads", "batch")


@dataclass(frozen=True)
class MattingOptions(OptionGroup):
    """How frames are matted; each value left None is what the export recorded (see
    :class:`spgim.stream_defaults.StreamDefaults`, which checks them).

    Attributes:
        work_size: the longer side the model sees.
        keyframe_interval: SPD every this many frames (0: every frame).
        keyframe_ramp: frames over which a keyframe's correction is phased in.
        smoothing: temporal smoothing of the alpha where the frame is still, in [0, 1).
        upsampling: ``"auto"``, ``"guided"``, ``"guided-cv2"`` or ``"bilinear"`` (see :mod:`spgim.runtime.upsampling`).
    """

    work_size: int | None = field(
        default=None,
        metadata=flag(
            "--work-size",
            f"longer side the model sees (default: the export's: {stated_defaults('work_size')})",
            WHOLE,
            metavar="N",
        ),
    )
    keyframe_interval: int | None = field(
        default=None,
        metadata=flag(
            "--keyframe-interval",
            "run SPD every K frames and on scene cuts, SPGM every frame guided by the previous alpha; 0: SPD on "
            f"every frame (default: the export's: {stated_defaults('keyframe_interval')})",
            WHOLE,
            metavar="K",
        ),
    )
    keyframe_ramp: int | None = field(
        default=None,
        metadata=flag(
            "--keyframe-ramp",
            "phase a keyframe's correction in over R frames instead of switching at once (one more SPGM run per "
            f"keyframe; 0: switch at once; default: the export's: {stated_defaults('keyframe_ramp')})",
            WHOLE,
            metavar="R",
        ),
    )
    smoothing: float | None = field(
        default=None,
        metadata=flag(
            "--smoothing",
            "temporal smoothing of the alpha where the frame is still: S x the previous alpha + (1 - S) x the new "
            "one, 0 <= S < 1, 0: off; lowers flicker, lags still edges slightly (default: the export's: "
            f"{stated_defaults('smoothing')})",
            NUMBER,
            metavar="S",
        ),
    )
    upsampling: str = field(
        default="auto",
        metadata=flag(
            "--upsample",
            "alpha to full size: guided (the export's guided-filter graph, on the engine), guided-cv2 (the same "
            "filter in OpenCV, CPU only), bilinear, or auto (default: the graph on a GPU, guided-cv2 on the CPU, "
            "where the graph costs more than a live frame's budget)",
            metavar="MODE",
        ),
    )

    def __post_init__(self) -> None:
        StreamDefaults().overridden(**self.stream_values())  # refuses a bad value now, not after the model loads

    def stream_values(self) -> dict[str, int | float | None]:
        """The values laid over the export's :class:`~spgim.stream_defaults.StreamDefaults` (None: the export's)."""
        return {
            "work_size": self.work_size,
            "keyframe_interval": self.keyframe_interval,
            "keyframe_ramp": self.keyframe_ramp,
            "smoothing": self.smoothing,
        }


@dataclass(frozen=True)
class SourceOptions(OptionGroup):
    """How the input is read; a live network source's reconnects and RTSP transport also apply to the
    streams a job publishes.

    Attributes:
        live: drop late frames instead of queueing (None: on for network and webcam sources).
        start, duration: the part of a recorded file to matte, in seconds (live: duration only).
        reconnects: attempts in a row to reopen a dropped live source (the first open included) or destination.
        stall_timeout: seconds without a frame after which a live source is reopened.
        startup_timeout: seconds a live source has to give its first picture.
        rtsp_transport: ``"udp"`` or ``"tcp"`` for RTP from or to ``rtsp://`` (None: FFmpeg's, UDP then TCP).
    """

    live: bool | None = field(
        default=None,
        metadata=flag("--live", "drop late frames (default for network and webcam input)", None),
    )
    start: float | None = field(
        default=None, metadata=flag("--start", "start at this time (seconds or M:SS)", SECONDS, metavar="TIME")
    )
    duration: float | None = field(
        default=None, metadata=flag("--duration", "matte this long (seconds or M:SS)", SECONDS, metavar="TIME")
    )
    reconnects: int = field(
        default=5, metadata=flag("--reconnects", "live: reconnect attempts in a row (default {default})", WHOLE)
    )
    stall_timeout: float = field(
        default=2.0,
        metadata=flag(
            "--stall-timeout",
            "live: a source that delivers no frame for this long is dropped and reopened (default {default}); an "
            "RTMP or SRT connection that goes silent is waited on instead, up to --startup-timeout (its server holds "
            "it while the publisher is away, and passes on the restarted stream from its first keyframe)",
            NUMBER,
            metavar="SECONDS",
        ),
    )
    startup_timeout: float = field(
        default=STARTUP_TIMEOUT_S,
        metadata=flag(
            "--startup-timeout",
            "live: a source must give its first picture within this long of opening; a player that joins between "
            "keyframes waits for the next (default {default}: keyframes 10 s apart, plus connecting); a source not "
            "up yet is retried up to --reconnects times",
            NUMBER,
            metavar="SECONDS",
        ),
    )
    rtsp_transport: str | None = field(
        default=None,
        metadata=flag(
            "--rtsp-transport",
            "udp or tcp: RTP over UDP or interleaved in the RTSP connection (TCP: through firewalls and NAT, no "
            "loss) (default: FFmpeg's, UDP falling back to TCP)",
            metavar="{udp,tcp}",
        ),
    )


@dataclass(frozen=True)
class EncodeOptions(OptionGroup):
    """How outputs are encoded (each checked where the output opens, :mod:`spgim.streaming.outputs`).

    Attributes:
        codec: ``h264``, ``h265``, ``vp9``, ``prores`` or ``png`` (None: from the file's extension).
        quality: 0-100, higher is better (None: visually lossless).
        preset: the H.264/H.265 encoder preset (None: veryfast for files, ultrafast for live sources).
    """

    codec: str | None = field(
        default=None, metadata=flag("--codec", "override the codec: h264, h265, vp9, prores, png")
    )
    quality: int | None = field(
        default=None, metadata=flag("--quality", "0-100, higher is better (default: visually lossless)", WHOLE)
    )
    preset: str | None = field(
        default=None,
        metadata=flag(
            "--preset", "H.264/H.265 encoder preset (default: veryfast for files, ultrafast for live sources)"
        ),
    )


LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class PreviewAddress:
    """Where a preview page listens.

    Attributes:
        host: an address or host name to bind (``127.0.0.1`` unless the user names one).
        port: the TCP port; 0 binds any free one.
    """

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> PreviewAddress:
        """The address in ``PORT`` (on 127.0.0.1), ``HOST:PORT`` or ``[IPv6]:PORT``; ValueError on other text."""
        host, colon, port = text.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if (colon and not host) or not port.isdigit() or int(port) > 65535:
            raise ValueError(text)
        return cls(host or LOOPBACK, int(port))

    def url(self, port: int | None = None) -> str:
        """The page's URL (``port``: the one bound, where this address asked for any)."""
        return f"http://{self._host()}:{self.port if port is None else port}/"

    def __str__(self) -> str:
        return f"{self._host()}:{self.port}"

    def _host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


PREVIEW_ADDRESS = ValueType(PreviewAddress.parse, "[HOST:]PORT (a port from 0, any free one, to 65535)")


@dataclass(frozen=True)
class PreviewOptions(OptionGroup):
    """Where a job serves its live preview page (:mod:`spgim.streaming.preview`).

    Attributes:
        address: the page's host and port (None: no page).
    """

    address: PreviewAddress | None = field(
        default=None,
        metadata=flag(
            "--preview",
            "serve a live preview page here: the composite beside the input and the alpha, and the job's figures; "
            "a bare PORT binds 127.0.0.1 (give a HOST to open it to others), 0 any free port; costs nothing while "
            "no page is open",
            PREVIEW_ADDRESS,
            metavar="[HOST:]PORT",
        ),
    )


def open_matter(
    model: str | Path | None,
    engine: EngineOptions,
    matting: MattingOptions,
    *,
    log: Callable[[str], None] | None = None,
) -> Matter | TritonMatter:
    """The export in ``model`` on the engine and with the matting options asked for, as a matting job runs it;
    with ``engine.server``, a client of that ``spgim serve`` instead (``model`` then None), ``log`` taking its
    drop and reconnect lines."""
    if engine.server is not None:
        return _open_remote(model, engine, matting, log)
    if model is None:
        raise SpgimError("give --model or --server")
    return open_local_matter(model, engine, matting)


def open_local_matter(model: str | Path, engine: EngineOptions, matting: MattingOptions) -> Matter:
    """The export in ``model`` on the engine and with the matting options asked for, in this process."""
    from spgim.runtime.matting import Matter

    # No spinning: the decoder and encoder threads need the cores the model's idle threads would spin on.
    return Matter(
        model,
        backend=engine.backend,
        precision=engine.precision,
        threads=engine.threads,
        work_size=matting.work_size,
        keyframe_interval=matting.keyframe_interval,
        keyframe_ramp=matting.keyframe_ramp,
        smoothing=matting.smoothing,
        upsampling=matting.upsampling,
        spinning=False,
    )


def _open_remote(
    model: str | Path | None, engine: EngineOptions, matting: MattingOptions, log: Callable[[str], None] | None
) -> TritonMatter:
    """The client of ``engine.server``; what only the server decides (its ``spgim serve`` options) is refused."""
    if model is not None:
        raise SpgimError("give --model or --server, not both (with --server the model runs on the server)")
    defaults = EngineOptions()
    local = [
        spec.name
        for name, spec in _flags(EngineOptions).items()
        if name in ("backend", "precision", "threads") and getattr(engine, name) != getattr(defaults, name)
    ]
    local += [
        spec.name for name, spec in _flags(MattingOptions).items() if getattr(matting, name) not in (None, "auto")
    ]
    if local:
        raise SpgimError(f"{', '.join(local)}: the server's choice (give it to spgim serve), not with --server")
    from .remote import TritonMatter

    return TritonMatter(engine.server or "", log=log)


def _flags(group: type[OptionGroup]) -> dict[str, Flag]:
    """Each field of ``group`` that is a flag, and its flag."""
    return {item.name: item.metadata["flag"] for item in fields(group) if "flag" in item.metadata}  # type: ignore[arg-type]
