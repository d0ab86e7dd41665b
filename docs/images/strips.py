"""Picture strips for the docs: frames of a clip next to what `spgim matte` made of them.

Not part of the package; docs/images/README.md lists the commands that made each picture.

    python docs/images/strips.py OUT.png --height 96 --columns "input,alpha,composite" \
        --row LABEL FRAMES CLIP ALPHA COMPOSITE [--row ...]

A row shows, for each frame number in FRAMES (comma list), one tile per source (a video, or a folder of
PNGs read in name order), every tile scaled to the same height; the first tile of each frame carries
LABEL and the frame number, the others their column's name. Rows are stacked. The PNG is quantised to
a 256-colour palette to stay small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image


def read_frames(source: Path, indices: list[int]) -> list[np.ndarray]:
    """RGB uint8 frames ``indices`` of a video, or of a folder of PNGs (sorted by name)."""
    if source.is_dir():
        files = sorted(source.glob("*.png"))
        picked = [np.asarray(Image.open(files[i]).convert("RGB")) for i in indices]
        return picked
    wanted, out = set(indices), {}
    with av.open(str(source)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                out[number] = frame.to_ndarray(format="rgb24")
            if len(out) == len(wanted):
                break
    return [out[i] for i in indices]


def tile(image: np.ndarray, height: int, text: str) -> np.ndarray:
    width = round(image.shape[1] * height / image.shape[0])
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    # White on a dark box: an outline drawn thicker would be wider (Hershey glyphs advance with thickness).
    (text_width, text_height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    out[: text_height + 8, : text_width + 8] //= 3
    cv2.putText(out, text, (4, text_height + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def strip(label: str, indices: list[int], sources: list[Path], columns: list[str], height: int) -> np.ndarray:
    per_source = [read_frames(source, indices) for source in sources]
    gap = np.full((height, 2, 3), 255, np.uint8)
    tiles: list[np.ndarray] = []
    for k, index in enumerate(indices):
        for s, images in enumerate(per_source):
            name = f"{label} #{index}" if s == 0 else columns[s % len(columns)]
            tiles += [tile(images[k], height, name), gap]
        tiles.append(np.full((height, 6, 3), 255, np.uint8))
    return np.concatenate(tiles[:-2], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--columns", default="input,alpha,composite")
    parser.add_argument("--row", nargs="+", action="append", required=True, metavar="LABEL FRAMES SOURCE")
    args = parser.parse_args()
    columns = args.columns.split(",")
    rows = []
    for label, indices, *sources in args.row:
        rows.append(
            strip(label, [int(i) for i in indices.split(",")], [Path(s) for s in sources], columns, args.height)
        )
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    image = Image.fromarray(np.concatenate(padded, axis=0)[:-2]).quantize(256, dither=Image.Dither.NONE)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {image.width}x{image.height}, {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
