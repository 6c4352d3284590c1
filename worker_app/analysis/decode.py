"""Decoding: MP3 in-process with libsndfile (its libmpg123), everything else with Debian's ffmpeg in a subprocess,
streamed through a pipe.

One pass over the file gives both what the whole-track loudness needs and the excerpt the other features need:
ffmpeg writes 32-bit float PCM at 44,100 Hz (one channel for a mono file, two otherwise: more channels are
downmixed to stereo) and the caller reads it in chunks, so a two-hour mix costs a chunk of memory, not gigabytes.
Loudness is measured on this stream because EBU R128 sums the channels' energies and counts what lies above
11 kHz (hi-hats, noise); a 22,050 Hz mono decode reads up to 3 LU low on stereo material and more on bright
material. Decoding at 44,100 Hz stereo costs the same CPU as at 22,050 Hz mono (0.20 s against 0.18 s for a
3-minute 256 kb/s MP3 here: the MP3 decoder dominates), and the excerpt is then halved to 22,050 Hz mono in numpy.

MP3, the common case, goes through soundfile (libsndfile 1.2 with libmpg123, bundled in its wheel): 0.30 s of CPU
for the 3-minute 256 kb/s reference file against 0.42-0.45 s for ffmpeg started, decoding and writing the pipe
(bench/analysis.py), the largest single cost of the analysis. Only a ``.mp3`` at 44,100 Hz with one or two channels
takes that road; anything libsndfile will not open falls back to ffmpeg, which then gives the failure its reason.
FLAC and Ogg stay with ffmpeg: libsndfile is no faster on FLAC and slower on Vorbis here. Decoding in-process
trades ffmpeg's isolation (a decoder crash would take the worker process, which Celery replaces and the unit's
delivery guarantees retry) for that CPU; libmpg123 is the decoder most players use on untrusted files.

Bounded: ``time_limit`` seconds of wall time per file (ffmpeg is killed, or the in-process reader stops at the next
chunk; the file fails with that reason), ``max_seconds`` of audio at most (a 10-hour file does not hold a worker),
one ffmpeg thread.
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy

DECODE_RATE = 44_100
ANALYSIS_RATE = 22_050
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
CHUNK_SECONDS = 1.0  # a multiple of the 100 ms loudness block, so blocks never straddle two chunks
# Errors of the moment or the host, not of the file (a disk or a network share failing a read, a permission, memory):
# a decoder that meets one says so in the C library's words (ffmpeg's av_strerror, libsndfile's "System error").
# ffmpeg words some of its own verdicts with errno names too (EINVAL, ENOSYS, EDOM), so the list names the passing
# ones rather than taking every errno but EINVAL as the tag reader does.
PASSING_ERRNOS = (errno.EIO, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ESTALE, errno.ENOMEM, errno.ETIMEDOUT,
                  errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENXIO, errno.EBUSY, errno.EAGAIN,
                  errno.ENFILE, errno.EMFILE, errno.ECONNRESET, errno.ECONNABORTED)
PASSING_MESSAGES = tuple(os.strerror(code) for code in PASSING_ERRNOS)
SF_ERR_SYSTEM = 2  # libsndfile's public code for a failed system call (sndfile.h)


class DecodeError(Exception):
    """The file cannot be decoded; ``reason`` says why, for the failure record. ``passing``: the cause is the
    moment or the host (a time limit, no ffmpeg), not the file, so it must not be remembered as the file's verdict."""

    def __init__(self, reason: str, passing: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.passing = passing


@dataclass
class DecodeStats:
    seconds: float = 0.0  # audio decoded
    channels: int = 0
    truncated: bool = False  # stopped at max_seconds


def ffmpeg_binary() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise DecodeError("ffmpeg is not installed (apt install ffmpeg)", passing=True)
    return found


def stream_pcm(path: str | bytes, channels: int | None, *, time_limit: float, max_seconds: float,
               stats: DecodeStats | None = None) -> Iterator[numpy.ndarray]:
    """Chunks of (frames, channels) float32 at DECODE_RATE, one second each (the last shorter).

    ``channels`` is the file's channel count as the catalogue knows it (None: unknown, treated as stereo).
    Raises DecodeError when the decoder fails, yields nothing, or takes longer than ``time_limit`` seconds."""
    stats = stats if stats is not None else DecodeStats()
    opened = open_mp3(path)
    if opened is not None:
        return _stream_soundfile(opened, time_limit=time_limit, max_seconds=max_seconds, stats=stats)
    return _stream_ffmpeg(path, channels, time_limit=time_limit, max_seconds=max_seconds, stats=stats)


def open_mp3(path: str | bytes) -> Any:
    """An open soundfile.SoundFile for a 44.1 kHz mono or stereo MP3 libsndfile can read, else None (ffmpeg's)."""
    if not os.fsdecode(path).lower().endswith(".mp3"):
        return None
    try:  # a FIFO (or device) would block the open itself, where no time limit reaches: ffmpeg's, under its timer
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    try:
        import soundfile  # type: ignore[import-untyped]  # it ships no type information
    except (ImportError, OSError):  # OSError: no libsndfile where the wheel does not bundle one
        return None
    try:
        handle = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError, OSError):
        return None
    if handle.format != "MP3" or handle.samplerate != DECODE_RATE or handle.channels not in (1, 2):
        handle.close()
        return None
    return handle


def _stream_soundfile(handle: Any, *, time_limit: float, max_seconds: float,
                      stats: DecodeStats) -> Iterator[numpy.ndarray]:
    import soundfile

    stats.channels = handle.channels
    chunk_frames = int(DECODE_RATE * CHUNK_SECONDS)
    limit_frames = int(max_seconds * DECODE_RATE)
    frames_total = 0
    deadline = time.monotonic() + time_limit
    try:
        while frames_total < limit_frames:
            if time.monotonic() > deadline:
                raise DecodeError(f"decoding took longer than {time_limit:g} s", passing=True)
            chunk = numpy.empty((min(chunk_frames, limit_frames - frames_total), handle.channels), dtype=numpy.float32)
            try:
                frames = len(handle.read(out=chunk))
            except (soundfile.LibsndfileError, RuntimeError) as error:
                raise DecodeError(f"libsndfile could not decode it: {error}",
                                  passing=getattr(error, "code", None) == SF_ERR_SYSTEM) from error
            if frames:
                frames_total += frames
                yield chunk[:frames]
            if frames < len(chunk):
                break
    finally:
        handle.close()
    stats.seconds = frames_total / DECODE_RATE
    stats.truncated = frames_total >= limit_frames
    if frames_total == 0:
        raise DecodeError("libsndfile decoded no audio from it")


def _stream_ffmpeg(path: str | bytes, channels: int | None, *, time_limit: float, max_seconds: float,
                   stats: DecodeStats) -> Iterator[numpy.ndarray]:
    out_channels = 1 if channels == 1 else 2
    stats.channels = out_channels
    command = [
        ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-threads", "1",
        # A name that is not UTF-8 arrives as bytes; subprocess hands the surrogate-escaped text back as those bytes.
        "-i", os.fsdecode(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-t", f"{max_seconds:.3f}",
        "-ac", str(out_channels), "-ar", str(DECODE_RATE), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               bufsize=0)
    # bufsize=0: stdout is the pipe's raw FileIO (readinto reads straight into the chunk); both are set by PIPE.
    stdout = cast(io.FileIO, process.stdout)
    stderr = cast(io.FileIO, process.stderr)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(time_limit, kill)
    timer.daemon = True
    timer.start()
    # stderr is read by a thread: ffmpeg blocks if its error pipe fills while we only read stdout.
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(stderr.read()), daemon=True)
    reader.start()
    try:  # a 1 MiB pipe instead of 64 KiB: a sixteenth of the wake-ups for 10 MB/s of PCM
        fcntl.fcntl(stdout.fileno(), F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    chunk_frames = int(DECODE_RATE * CHUNK_SECONDS)
    frame_bytes = 4 * out_channels
    frames_total = 0
    try:
        while True:
            # Read straight into the chunk's own array: no copy of the PCM in Python.
            chunk = numpy.empty((chunk_frames, out_channels), dtype="<f4")
            view = chunk.data.cast("B")
            filled = 0
            while filled < len(view):
                got = stdout.readinto(view[filled:])
                if not got:
                    break
                filled += got
            frames = filled // frame_bytes
            if frames:
                frames_total += frames
                yield chunk[:frames]
            if frames < chunk_frames:
                break
        returncode = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
        stdout.close()
        reader.join(timeout=5)
        stderr.close()
    stats.seconds = frames_total / DECODE_RATE
    stats.truncated = stats.seconds >= max_seconds - 0.01
    if timed_out.is_set():
        raise DecodeError(f"decoding took longer than {time_limit:g} s", passing=True)
    message = b"".join(errors).decode("utf-8", "replace").strip().splitlines()
    # ffmpeg ends with status 0 after a read that fails mid-file, having written the audio before it: features of
    # that part would be stored as the file's, so a passing error fails the file whatever the status.
    passing = [line for line in message if line.rstrip(". ").endswith(PASSING_MESSAGES)]
    if passing:
        raise DecodeError(f"ffmpeg could not read it: {passing[-1]}", passing=True)
    if returncode != 0:
        raise DecodeError(f"ffmpeg could not decode it: {message[-1] if message else f'exit code {returncode}'}")
    if frames_total == 0:
        raise DecodeError("ffmpeg decoded no audio from it")


def to_analysis_rate(excerpt: numpy.ndarray) -> numpy.ndarray:
    """(frames, channels) at DECODE_RATE -> mono float32 at ANALYSIS_RATE (anti-aliased halving)."""
    from scipy.signal import resample_poly

    if excerpt.ndim == 2 and excerpt.shape[1] == 2:
        mono = (excerpt[:, 0] + excerpt[:, 1]) * 0.5  # 15x cheaper than .mean(axis=1) on a (n, 2) array
    else:
        mono = excerpt.mean(axis=1) if excerpt.ndim == 2 else excerpt
    if len(mono) < 64:
        result: numpy.ndarray = mono[::2].astype(numpy.float32)
        return result
    resampled: numpy.ndarray = resample_poly(mono, 1, DECODE_RATE // ANALYSIS_RATE).astype(numpy.float32)
    return resampled
