"""Tiny test videos made with ffmpeg's lavfi sources (shared by the video ingestion tests)."""

import subprocess


def make_video(path, seconds=3.0, size="320x240", audio="sine", video=True, channels=2):
    """Write an mp4 at ``path`` (``audio``: sine, silence or None; ``video=False``: audio only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={size}:rate=5:duration={seconds}"]
    if audio == "sine":
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    elif audio == "silence":
        cmd += ["-f", "lavfi", "-i", f"anullsrc=r=44100:cl=stereo:d={seconds}"]
    if video:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac", "-ac", str(channels)]
    subprocess.run(cmd + [str(path)], check=True)
    return path
