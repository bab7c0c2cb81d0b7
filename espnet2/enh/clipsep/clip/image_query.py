"""Image queries: a picture, a frames directory or a video, read as the frames CLIP embeds.

CLIPSep embeds 3 frames at 1 fps around a clip's centre and averages them; every image query of this toolkit
(separation, synthesis, cached embeddings) reads its frames here.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023 (Sec. 4: 3 frames at 1 fps, mean of their CLIP embeddings).
"""

import os
import tempfile
from pathlib import Path
from typing import List, Sequence, Tuple, Union

from espnet2.enh.clipsep.clip_window import middle_window
from espnet2.enh.clipsep.errors import CLIPSepError, first_line

__all__ = [
    "IMAGE_QUERY_FRAMES",
    "IMAGE_SUFFIXES",
    "ImageLike",
    "center_frames",
    "check_image",
    "list_frames",
    "load_image",
    "read_image_query",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGE_QUERY_FRAMES = 3  # frames around a video's middle, 1 fps, as CLIPSep's and CLIPSonic's image queries

ImageLike = Union[str, os.PathLike, "PIL.Image.Image"]  # noqa: F821


def center_frames(frames: Sequence, num: int = 3) -> list:
    """Pick ``num`` consecutive items around the middle of a time-ordered list of frames."""
    return list(frames[middle_window(len(frames), num)])


def list_frames(directory: Union[str, os.PathLike]) -> List[Path]:
    """Image files of a frames directory, sorted by name (= time for ``%06d.jpg`` names)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: frames directory not found")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def load_image(image: ImageLike):
    """Open an image as RGB; one clear error naming the file when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err.__class__.__name__})") from err


def check_image(path: Union[str, os.PathLike]) -> None:
    """Cheap header check that ``path`` is an image (raises like :func:`load_image`)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image not found")
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: not a readable image ({err.__class__.__name__})") from err


def read_image_query(image) -> Tuple[str, List]:
    """The frames of an image query, loaded.

    Args:
        image: A PIL image, a picture file, a video file (the 3 frames at 1 fps around its middle) or a frames
            directory (its 3 middle frames, sorted by name).

    Returns:
        ``(name, frames)``: a file-name-safe name (``image-<stem>``) and RGB PIL images, ready for
        ``CLIPQueryEncoder.encode_images``.

    Raises:
        CLIPSepError: one line: a missing or unreadable file, an empty frames directory, a video ffmpeg cannot
            decode, or no ffmpeg.
    """
    from PIL import Image

    from espnet2.enh.clipsep.files.writing import slug
    from espnet2.enh.clipsep.video import VideoError, extract_frames

    if isinstance(image, Image.Image):
        return "image", [image.convert("RGB")]
    path = Path(image)
    name = "image-" + slug(path.stem)
    if not path.exists():
        raise CLIPSepError(f"{path}: image not found")
    try:
        if path.is_dir():
            frames = list_frames(path)
            if not frames:
                raise CLIPSepError(f"{path}: directory holds no image frames ({', '.join(IMAGE_SUFFIXES)})")
            return name, [load_image(f) for f in center_frames(frames, IMAGE_QUERY_FRAMES)]
        try:
            check_image(path)
            return name, [load_image(path)]
        except (ValueError, FileNotFoundError) as err:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                raise CLIPSepError(first_line(err)) from None
        with tempfile.TemporaryDirectory(prefix="clipsep-frames-") as tmp:
            try:
                extract_frames(path, Path(tmp) / "frames", fps=1, size=224)
            except VideoError as err:
                raise CLIPSepError(f"{path}: not a readable image or video ({err.reason}: {err.detail})") from None
            except RuntimeError as err:  # ffmpeg missing
                raise CLIPSepError(f"{path}: {first_line(err)}") from None
            frames = center_frames(list_frames(Path(tmp) / "frames"), IMAGE_QUERY_FRAMES)
            return name, [load_image(f) for f in frames]  # loaded before the directory goes
    except (ValueError, OSError) as err:
        if isinstance(err, CLIPSepError):
            raise
        raise CLIPSepError(first_line(err) if str(path) in str(err) else f"{path}: {first_line(err)}") from None
