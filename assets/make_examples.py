"""Draw the example sketches and photos the app ships (assets/examples/), deterministically.

Everything here is drawn with OpenCV primitives: no downloaded images, no licences to track.
Run it again after changing a drawing: `python assets/make_examples.py`.

Sketches are 512x512 black lines on white, as the canvas makes them. Photos are synthetic
512x384 street and landscape scenes for the edge, day/night, rain and edit tabs. Drawings are
512x512 flat-coloured emoji-style pictures, for the mini models' edit and edge examples.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
SKETCH_SIZE = 512
PHOTO_SIZE = (512, 384)  # width, height
INK = (0, 0, 0)
LINE = 3
EMOJI_RED = (221, 46, 68)  # the red of the emoji hearts and apples mini was trained on

Canvas = np.ndarray  # HxWx3 uint8, RGB


def blank_sketch() -> Canvas:
    return np.full((SKETCH_SIZE, SKETCH_SIZE, 3), 255, dtype=np.uint8)


def polyline(canvas: Canvas, points: list[tuple[int, int]], closed: bool = False) -> None:
    cv2.polylines(canvas, [np.array(points, dtype=np.int32)], closed, INK, LINE, cv2.LINE_AA)


def sketch_house() -> Canvas:
    canvas = blank_sketch()
    polyline(canvas, [(136, 250), (136, 430), (376, 430), (376, 250)])  # walls
    polyline(canvas, [(110, 262), (256, 130), (402, 262)])  # roof
    polyline(canvas, [(310, 190), (310, 140), (345, 140), (345, 222)])  # chimney
    cv2.rectangle(canvas, (226, 336), (286, 430), INK, LINE, cv2.LINE_AA)  # door
    for left in (160, 306):  # windows with crosses
        cv2.rectangle(canvas, (left, 290), (left + 50, 340), INK, LINE, cv2.LINE_AA)
        polyline(canvas, [(left + 25, 290), (left + 25, 340)])
        polyline(canvas, [(left, 315), (left + 50, 315)])
    polyline(canvas, [(20, 430), (492, 430)])  # ground
    cv2.circle(canvas, (440, 80), 34, INK, LINE, cv2.LINE_AA)  # sun
    return canvas


def sketch_cat_face() -> Canvas:
    canvas = blank_sketch()
    cv2.ellipse(canvas, (256, 290), (150, 130), 0, 0, 360, INK, LINE, cv2.LINE_AA)  # head
    polyline(canvas, [(130, 220), (150, 90), (220, 170)])  # left ear
    polyline(canvas, [(382, 220), (362, 90), (292, 170)])  # right ear
    for centre in ((200, 260), (312, 260)):  # eyes with slit pupils
        cv2.ellipse(canvas, centre, (30, 20), 0, 0, 360, INK, LINE, cv2.LINE_AA)
        cv2.ellipse(canvas, centre, (5, 17), 0, 0, 360, INK, -1, cv2.LINE_AA)
    polyline(canvas, [(244, 318), (268, 318), (256, 332)], closed=True)  # nose
    polyline(canvas, [(256, 332), (256, 350)])
    cv2.ellipse(canvas, (238, 350), (18, 14), 0, 0, 180, INK, LINE, cv2.LINE_AA)  # mouth
    cv2.ellipse(canvas, (274, 350), (18, 14), 0, 0, 180, INK, LINE, cv2.LINE_AA)
    for dy in (-12, 4, 20):  # whiskers
        polyline(canvas, [(190, 330 + dy // 2), (70, 320 + dy)])
        polyline(canvas, [(322, 330 + dy // 2), (442, 320 + dy)])
    return canvas


def sketch_mountains() -> Canvas:
    canvas = blank_sketch()
    polyline(canvas, [(0, 360), (110, 210), (170, 270), (280, 120), (380, 250), (430, 200), (512, 300)])
    polyline(canvas, [(250, 160), (280, 120), (312, 162), (292, 150), (270, 165), (250, 160)])  # snow cap
    polyline(canvas, [(0, 420), (512, 400)])  # lake shore
    for y, x0, x1 in ((440, 120, 260), (460, 260, 420), (482, 60, 200)):  # ripples
        polyline(canvas, [(x0, y), (x1, y)])
    for x in (60, 440):  # pine trees
        polyline(canvas, [(x - 30, 400), (x, 320), (x + 30, 400)], closed=True)
        polyline(canvas, [(x, 400), (x, 418)])
    cv2.ellipse(canvas, (120, 90), (50, 18), 0, 0, 360, INK, LINE, cv2.LINE_AA)  # cloud
    cv2.ellipse(canvas, (160, 80), (40, 22), 0, 180, 360, INK, LINE, cv2.LINE_AA)
    return canvas


def vertical_gradient(height: int, width: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Canvas:
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    colours = (1 - ramp) * np.array(top) + ramp * np.array(bottom)
    return np.broadcast_to(colours, (height, width, 3)).astype(np.uint8).copy()


def street(sky_top: tuple[int, int, int], sky_bottom: tuple[int, int, int], *, night: bool = False,
           rain: bool = False) -> Canvas:
    """A street in one-point perspective: sky, road with lane marks, buildings, a car, trees."""
    width, height = PHOTO_SIZE
    horizon = 170
    image = vertical_gradient(height, width, sky_top, sky_bottom)
    shade = 0.35 if night else 1.0

    def tone(colour: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(int(c * shade) for c in colour)  # type: ignore[return-value]

    image[horizon:] = tone((96, 110, 90))  # verges
    cv2.fillPoly(image, [np.array([(200, horizon), (312, horizon), (512, 384), (0, 384)])], tone((70, 70, 76)))
    for step in range(6):  # dashed centre line, longer dashes nearer the camera
        y0 = horizon + 12 + step * step * 7
        y1 = y0 + 4 + step * 4
        cv2.line(image, (256, y0), (256, y1), tone((235, 225, 150)), 1 + step // 2, cv2.LINE_AA)
    buildings = [(0, 40, 70, (168, 120, 96)), (70, 70, 135, (190, 180, 160)), (385, 55, 440, (150, 130, 140)),
                 (440, 30, 512, (180, 160, 120))]
    rng = np.random.default_rng(7)
    for left, top, right, colour in buildings:
        cv2.rectangle(image, (left, top), (right, horizon + 6), tone(colour), -1)
        for wy in range(top + 12, horizon - 10, 22):
            for wx in range(left + 8, right - 12, 18):
                lit = night and rng.random() < 0.6
                window = (255, 214, 120) if lit else tone((120, 150, 185))
                cv2.rectangle(image, (wx, wy), (wx + 9, wy + 12), window, -1)
    for x, y in ((150, 200), (360, 205)):  # trees
        cv2.line(image, (x, y), (x, y + 40), tone((90, 60, 40)), 4)
        cv2.circle(image, (x, y - 8), 22, tone((60, 120, 60)), -1, cv2.LINE_AA)
    cv2.rectangle(image, (276, 260), (372, 300), tone((180, 30, 40)), -1)  # car body
    cv2.rectangle(image, (292, 238), (352, 262), tone((150, 25, 35)), -1)
    cv2.rectangle(image, (298, 242), (346, 258), tone((170, 200, 220)), -1)
    for wheel in (296, 352):
        cv2.circle(image, (wheel, 302), 11, (20, 20, 20), -1, cv2.LINE_AA)
    if night:
        for lamp in (284, 364):
            cv2.circle(image, (lamp, 282), 6, (255, 250, 210), -1, cv2.LINE_AA)
        cv2.circle(image, (430, 40), 14, (235, 235, 220), -1, cv2.LINE_AA)  # moon
    elif not rain:
        cv2.circle(image, (90, 30), 16, (255, 245, 200), -1, cv2.LINE_AA)  # sun
    image = cv2.GaussianBlur(image, (3, 3), 0)
    if rain:
        add_rain(image)
    return image


def add_rain(image: Canvas) -> None:
    rng = np.random.default_rng(11)
    for _ in range(260):
        x, y = int(rng.integers(0, image.shape[1])), int(rng.integers(0, image.shape[0]))
        cv2.line(image, (x, y), (x - 4, y + 16), (200, 205, 215), 1, cv2.LINE_AA)


def photo_day_street() -> Canvas:
    return street((110, 160, 230), (200, 225, 245))


def photo_night_street() -> Canvas:
    return street((8, 10, 30), (30, 34, 70), night=True)


def photo_rainy_street() -> Canvas:
    return street((120, 124, 132), (170, 172, 178), rain=True)


def photo_mountain_lake() -> Canvas:
    width, height = PHOTO_SIZE
    image = vertical_gradient(height, width, (120, 170, 235), (225, 235, 245))
    ridge = np.array([(0, 250), (90, 150), (160, 200), (260, 90), (350, 190), (420, 140), (512, 220), (512, 384),
                      (0, 384)])
    cv2.fillPoly(image, [ridge], (95, 105, 120), cv2.LINE_AA)
    cv2.fillPoly(image, [np.array([(230, 120), (260, 90), (292, 124), (262, 112)])], (245, 245, 250), cv2.LINE_AA)
    image[270:] = vertical_gradient(height - 270, width, (70, 120, 170), (40, 80, 130))
    cv2.fillPoly(image, [np.array([(0, 270), (512, 262), (512, 280), (0, 290)])], (70, 110, 60))
    return cv2.GaussianBlur(image, (3, 3), 0)


def emoji_outline(canvas: Canvas, outline: np.ndarray, fill: tuple[int, int, int]) -> None:
    """A filled shape with the thick black outline of the emoji the mini models were trained on."""
    cv2.fillPoly(canvas, [outline], fill, cv2.LINE_AA)
    cv2.polylines(canvas, [outline], True, INK, 4 * LINE, cv2.LINE_AA)


def drawing_red_heart() -> Canvas:
    """A flat red heart in the emoji style (for mini's edit and edge examples)."""
    canvas = blank_sketch()
    t = np.linspace(0, 2 * np.pi, 200)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    emoji_outline(canvas, np.stack([256 + 13 * x, 250 - 13 * y], axis=1).astype(np.int32), EMOJI_RED)
    return canvas


def drawing_red_apple() -> Canvas:
    """A flat red apple with a stem and a green leaf, in the emoji style."""
    canvas = blank_sketch()
    t = np.linspace(0, 2 * np.pi, 200)
    radius = 170 * (1 - 0.14 * np.sin(t) ** 16 * (np.sin(t) < 0))  # a dip at the top, under the stem
    body = np.stack([256 + 1.05 * radius * np.cos(t), 290 + radius * np.sin(t)], axis=1).astype(np.int32)
    emoji_outline(canvas, body, EMOJI_RED)
    cv2.line(canvas, (256, 140), (270, 70), INK, 6 * LINE, cv2.LINE_AA)  # stem
    leaf = cv2.ellipse2Poly((320, 95), (55, 26), -25, 0, 360, 10)
    emoji_outline(canvas, leaf, (92, 177, 68))
    return canvas


EXAMPLES: dict[str, Callable[[], Canvas]] = {
    "sketch_house.png": sketch_house,
    "sketch_cat.png": sketch_cat_face,
    "sketch_mountains.png": sketch_mountains,
    "photo_day_street.png": photo_day_street,
    "photo_night_street.png": photo_night_street,
    "photo_rainy_street.png": photo_rainy_street,
    "photo_mountain_lake.png": photo_mountain_lake,
    "drawing_red_heart.png": drawing_red_heart,
    "drawing_red_apple.png": drawing_red_apple,
}


def main() -> None:
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, draw in EXAMPLES.items():
        path = EXAMPLES_DIR / name
        cv2.imwrite(str(path), cv2.cvtColor(draw(), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {path.relative_to(EXAMPLES_DIR.parent.parent)} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
