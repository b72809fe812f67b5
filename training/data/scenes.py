"""Randomised street and landscape scenes in three looks: clear day, night, and rain (by day).

A scene's geometry (`SceneLayout`: horizon, road, buildings, cars, trees, hills, lamps) is drawn
independently of its condition, so every condition keeps the same edges (buildings, road, cars).
`render(layout, condition, rng)` then paints it: a clear day (blue sky, sun, clouds), night (dark
sky, moon and stars, lit windows, street lamps, headlights, reflections) or rain (grey overcast
sky, desaturated colours, rain streaks, wet road reflections). Drawn at twice the resolution and
downsampled for anti-aliasing.

Datasets (img2img-turbo's unpaired layout): day_night (A day, B night) and clear_rainy (A clear,
B rainy), with A and B drawn from independent random scenes; plus captioned/ (metadata.jsonl) for
the classifier, and paired/{day_night,clear_rainy}/test_* (paired layout: one layout in both
conditions) as a reference for scoring translations. A "clear" scene is a clear day scene, so the classifier's conditions are
day / night / rainy; metadata also carries "time" (day/night) and "weather" (clear/rainy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.data.output import link_or_copy, save_png, write_json, write_metadata, write_text

CONDITIONS = ("day", "night", "rainy")
PROMPTS = {"day": "driving in the day", "night": "driving in the night", "rainy": "driving in heavy rain"}
TEST_FRACTION = 0.1
Color = tuple[float, float, float]  # RGB in [0, 1]


@dataclass
class Building:
    left: int
    right: int
    top: int
    color: Color
    window_rows: int
    window_cols: int
    lit: np.ndarray  # (rows, cols) bool: which windows are lit at night


@dataclass
class Car:
    left: int
    width: int
    bottom: int
    color: Color
    facing_viewer: bool  # headlights (white) when True, tail lights (red) when False


@dataclass
class SceneLayout:
    """Condition-independent geometry of one scene, in pixels of a size x size drawing."""

    size: int
    kind: str  # "street" or "landscape"
    horizon: int
    vanishing_x: int
    road_half_width: int  # at the bottom edge
    celestial: tuple[int, int, int]  # x, y, radius of the sun / moon
    clouds: list[tuple[int, int, int, int]] = field(default_factory=list)
    hills: list[tuple[np.ndarray, Color]] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: list[tuple[int, int, int, Color]] = field(default_factory=list)  # x, base y, height, leaf colour
    lamps: list[tuple[int, int, int]] = field(default_factory=list)  # x, base y, height
    cars: list[Car] = field(default_factory=list)
    ground: Color = (0.35, 0.55, 0.25)


def _color(rng: np.random.Generator, base: Color, spread: float) -> Color:
    return tuple(float(np.clip(c + rng.uniform(-spread, spread), 0, 1)) for c in base)


def _road_x(layout: SceneLayout, y: float, side: int) -> float:
    """x of the road's left (side -1) or right (+1) edge at height y (perspective towards the horizon)."""
    depth = (y - layout.horizon) / (layout.size - layout.horizon)
    return layout.vanishing_x + side * layout.road_half_width * depth


def _sample_buildings(rng: np.random.Generator, size: int, horizon: int) -> list[Building]:
    buildings, x = [], int(rng.integers(-size // 10, 0))
    palette = [(0.72, 0.62, 0.5), (0.6, 0.6, 0.62), (0.62, 0.36, 0.28), (0.8, 0.76, 0.66), (0.45, 0.5, 0.58)]
    while x < size:
        width = int(rng.integers(size // 9, size // 4))
        height = int(rng.integers(size // 8, int(horizon * 0.85)))
        rows, cols = max(1, height // int(size * 0.06)), max(1, width // int(size * 0.05))
        base = palette[int(rng.integers(len(palette)))]
        buildings.append(Building(x, x + width, horizon - height, _color(rng, base, 0.08), rows, cols,
                                  rng.random((rows, cols)) < rng.uniform(0.4, 0.85)))
        x += width + int(rng.integers(0, size // 25))
    return buildings


def _sample_hills(rng: np.random.Generator, size: int, horizon: int) -> list[tuple[np.ndarray, Color]]:
    hills = []
    for layer in range(int(rng.integers(2, 4))):
        xs = np.linspace(0, size, 24)
        amplitude = size * rng.uniform(0.05, 0.16) / (layer + 1)
        phase, frequency = rng.uniform(0, 2 * np.pi), rng.uniform(1.0, 3.0)
        ys = horizon - amplitude * (1 + np.sin(xs / size * frequency * 2 * np.pi + phase)) - size * 0.02 * (2 - layer)
        polygon = np.concatenate([np.stack([xs, ys], 1), [[size, horizon + 2], [0, horizon + 2]]]).astype(np.int32)
        shade = 0.25 + 0.12 * layer
        hills.append((polygon, _color(rng, (shade * 0.8, shade * 1.6, shade * 0.7), 0.05)))
    return hills


def sample_layout(rng: np.random.Generator, size: int) -> SceneLayout:
    """A random street (buildings both sides) or landscape (hills, trees) with a road and cars."""
    kind = "street" if rng.random() < 0.5 else "landscape"
    horizon = int(size * rng.uniform(0.42, 0.6))
    layout = SceneLayout(size=size, kind=kind, horizon=horizon,
                         vanishing_x=int(size * rng.uniform(0.35, 0.65)),
                         road_half_width=int(size * rng.uniform(0.45, 0.8)),
                         celestial=(int(size * rng.uniform(0.1, 0.9)), int(horizon * rng.uniform(0.15, 0.5)),
                                    int(size * rng.uniform(0.04, 0.07))),
                         ground=_color(rng, (0.5, 0.5, 0.48) if kind == "street" else (0.32, 0.52, 0.22), 0.06))
    layout.clouds = [(int(rng.integers(0, size)), int(horizon * rng.uniform(0.1, 0.6)),
                      int(size * rng.uniform(0.06, 0.14)), int(size * rng.uniform(0.025, 0.05)))
                     for _ in range(int(rng.integers(1, 5)))]
    if kind == "street":
        layout.buildings = _sample_buildings(rng, size, horizon)
    else:
        layout.hills = _sample_hills(rng, size, horizon)
    for _ in range(int(rng.integers(2, 7))):
        base_y = int(rng.uniform(horizon + 2, size * 0.98))
        side = -1 if rng.random() < 0.5 else 1
        depth = (base_y - horizon) / (size - horizon)
        x = int(_road_x(layout, base_y, side) + side * size * rng.uniform(0.04, 0.2) * (0.3 + depth))
        height = int(size * (0.06 + 0.3 * depth) * rng.uniform(0.8, 1.3))
        if kind == "street" and rng.random() < 0.6:
            layout.lamps.append((x, base_y, height))
        else:
            layout.trees.append((x, base_y, height, _color(rng, (0.2, 0.45, 0.18), 0.07)))
    car_palette = [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.9, 0.9), (0.15, 0.15, 0.15), (0.9, 0.7, 0.1), (0.3, 0.6, 0.3)]
    for _ in range(int(rng.integers(1, 4))):
        bottom = int(rng.uniform(horizon + (size - horizon) * 0.2, size * 0.97))
        depth = (bottom - horizon) / (size - horizon)
        width = int(size * 0.3 * depth * rng.uniform(0.8, 1.1)) + 4
        left_edge, right_edge = _road_x(layout, bottom, -1), _road_x(layout, bottom, 1)
        left = int(rng.uniform(left_edge, max(left_edge + 1, right_edge - width)))
        layout.cars.append(Car(left, width, bottom, _color(rng, car_palette[int(rng.integers(len(car_palette)))], 0.05),
                               bool(rng.random() < 0.5)))
    layout.cars.sort(key=lambda car: car.bottom)  # far cars first
    return layout


@dataclass(frozen=True)
class Look:
    """How a condition paints a layout."""

    sky_top: Color
    sky_horizon: Color
    light: Color  # multiplies every non-emissive surface
    saturation: float  # 1 keeps colours, 0 makes them grey
    windows_lit: bool
    lights_on: bool
    reflections: float  # strength of the mirrored scene on the road
    rain: bool


LOOKS = {
    "day": Look((0.25, 0.5, 0.92), (0.72, 0.85, 0.98), (1.0, 1.0, 1.0), 1.0, False, False, 0.0, False),
    "night": Look((0.01, 0.01, 0.05), (0.06, 0.08, 0.18), (0.2, 0.22, 0.32), 0.7, True, True, 0.25, False),
    "rainy": Look((0.4, 0.42, 0.45), (0.62, 0.63, 0.65), (0.62, 0.63, 0.66), 0.3, False, True, 0.35, True),
}


def _bgr(color: Color) -> tuple[float, float, float]:
    """A colour for cv2 drawing on our RGB float canvas (cv2 does not care about the order)."""
    return tuple(float(c) for c in color)


def _draw_surfaces(layout: SceneLayout, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Everything that reflects light: hills, ground, road, buildings, trees, lamp posts, cars."""
    size, horizon = layout.size, layout.horizon

    def fill(points: np.ndarray, color: Color) -> None:
        cv2.fillPoly(canvas, [points.astype(np.int32)], _bgr(color), cv2.LINE_AA)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1.0, cv2.LINE_AA)

    for polygon, color in layout.hills:
        fill(polygon, color)
    fill(np.array([[0, horizon], [size, horizon], [size, size], [0, size]]), layout.ground)
    road = np.array([[_road_x(layout, horizon, -1), horizon], [_road_x(layout, horizon, 1), horizon],
                     [_road_x(layout, size, 1), size], [_road_x(layout, size, -1), size]])
    fill(road, (0.3, 0.3, 0.32))
    for side in (-1, 1):  # kerbs
        cv2.line(canvas, (int(_road_x(layout, horizon, side)), horizon), (int(_road_x(layout, size, side)), size),
                 _bgr((0.85, 0.85, 0.8)), max(1, size // 120), cv2.LINE_AA)
    for start in np.arange(0.05, 1.0, 0.14):  # lane dashes, longer when nearer
        y0, y1 = horizon + (size - horizon) * start ** 1.6, horizon + (size - horizon) * (start + 0.06) ** 1.6
        cv2.line(canvas, (layout.vanishing_x, int(y0)), (layout.vanishing_x, int(y1)), _bgr((0.95, 0.9, 0.6)),
                 max(1, int(size * 0.012 * start)), cv2.LINE_AA)
    for building in layout.buildings:
        fill(np.array([[building.left, building.top], [building.right, building.top],
                       [building.right, horizon], [building.left, horizon]]), building.color)
        for (x0, y0, x1, y1), _ in _windows(building, horizon):
            cv2.rectangle(canvas, (x0, y0), (x1, y1), _bgr((0.35, 0.45, 0.55)), -1)
    for x, base_y, height, leaves in layout.trees:
        cv2.line(canvas, (x, base_y), (x, base_y - height // 3), _bgr((0.35, 0.22, 0.12)), max(1, height // 12))
        cv2.ellipse(canvas, (x, base_y - height * 2 // 3), (height // 4 + 1, height // 3 + 1), 0, 0, 360,
                    _bgr(leaves), -1, cv2.LINE_AA)
    for x, base_y, height in layout.lamps:
        cv2.line(canvas, (x, base_y), (x, base_y - height), _bgr((0.25, 0.25, 0.27)), max(1, height // 25), cv2.LINE_AA)
    for car in layout.cars:
        body_top = car.bottom - car.width * 45 // 100
        cv2.rectangle(canvas, (car.left, body_top), (car.left + car.width, car.bottom - car.width // 10), _bgr(car.color), -1)
        cabin = np.array([[car.left + car.width // 6, body_top], [car.left + car.width * 5 // 6, body_top],
                          [car.left + car.width * 3 // 4, body_top - car.width // 4],
                          [car.left + car.width // 4, body_top - car.width // 4]])
        cv2.fillPoly(canvas, [cabin], _bgr(car.color), cv2.LINE_AA)
        cv2.fillPoly(canvas, [cabin + np.array([car.width // 20, car.width // 25])], _bgr((0.3, 0.38, 0.45)), cv2.LINE_AA)
        for wheel_x in (car.left + car.width // 5, car.left + car.width * 4 // 5):
            cv2.circle(canvas, (wheel_x, car.bottom - car.width // 10), car.width // 9 + 1, _bgr((0.05, 0.05, 0.05)), -1, cv2.LINE_AA)


def _windows(building: Building, horizon: int) -> Iterable[tuple[tuple[int, int, int, int], bool]]:
    width, height = building.right - building.left, horizon - building.top
    cell_w, cell_h = width / building.window_cols, height / (building.window_rows + 0.5)
    for row in range(building.window_rows):
        for col in range(building.window_cols):
            x0, y0 = building.left + col * cell_w + cell_w * 0.25, building.top + row * cell_h + cell_h * 0.3
            yield (int(x0), int(y0), int(x0 + cell_w * 0.5), int(y0 + cell_h * 0.45)), bool(building.lit[row, col])


def _draw_lights(layout: SceneLayout, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Emissive light (added on top, with a glow): lit windows, lamps, head and tail lights, moon, stars, sun."""
    size = layout.size
    light = np.zeros((size, size, 3), np.float32)
    x, y, radius = layout.celestial
    if look.windows_lit:  # night: moon and stars
        for sx, sy in zip(rng.integers(0, size, 60), rng.integers(0, layout.horizon, 60), strict=True):
            cv2.circle(light, (int(sx), int(sy)), 0, _bgr((0.9, 0.9, 1.0)), -1)
        cv2.circle(light, (x, y), radius, _bgr((0.95, 0.95, 0.85)), -1, cv2.LINE_AA)
        cv2.circle(light, (x + radius // 2, y - radius // 3), radius, _bgr((0, 0, 0)), -1, cv2.LINE_AA)  # crescent
        for building in layout.buildings:
            for (x0, y0, x1, y1), lit in _windows(building, layout.horizon):
                if lit:
                    cv2.rectangle(light, (x0, y0), (x1, y1), _bgr(_color(rng, (1.0, 0.82, 0.45), 0.08)), -1)
    elif not look.rain:  # clear day: the sun
        cv2.circle(light, (x, y), radius, _bgr((1.0, 0.95, 0.7)), -1, cv2.LINE_AA)
    if look.lights_on:
        for lamp_x, base_y, height in layout.lamps:
            cv2.circle(light, (lamp_x, base_y - height), max(1, height // 14), _bgr((1.0, 0.85, 0.55)), -1, cv2.LINE_AA)
        for car in layout.cars:
            lamp_y, lamp_r = car.bottom - car.width * 3 // 10, max(1, car.width // 14)
            color = (1.0, 1.0, 0.85) if car.facing_viewer else (0.95, 0.08, 0.05)
            for lamp_x in (car.left + car.width // 8, car.left + car.width * 7 // 8):
                cv2.circle(light, (lamp_x, lamp_y), lamp_r, _bgr(color), -1, cv2.LINE_AA)
    return light


def _saturate(image: np.ndarray, amount: float) -> np.ndarray:
    grey = image.mean(axis=2, keepdims=True)
    return grey + (image - grey) * amount


def _sky(layout: SceneLayout, look: Look) -> np.ndarray:
    t = np.clip(np.arange(layout.size, dtype=np.float32) / max(layout.horizon, 1), 0, 1)[:, None, None]
    column = (1 - t) * np.array(look.sky_top, np.float32) + t * np.array(look.sky_horizon, np.float32)
    return np.broadcast_to(column, (layout.size, layout.size, 3)).copy()


def _clouds(layout: SceneLayout, sky: np.ndarray, look: Look, rng: np.random.Generator) -> None:
    if look.windows_lit:
        return
    shade = (0.97, 0.97, 0.98) if not look.rain else (0.5, 0.51, 0.53)
    count = len(layout.clouds) if not look.rain else len(layout.clouds) + 6
    for index in range(count):
        if index < len(layout.clouds):
            x, y, rx, ry = layout.clouds[index]
        else:
            x, y = int(rng.integers(0, layout.size)), int(layout.horizon * rng.uniform(0, 0.7))
            rx, ry = int(layout.size * rng.uniform(0.15, 0.3)), int(layout.size * rng.uniform(0.04, 0.08))
        for dx, scale in ((0, 1.0), (-rx // 2, 0.7), (rx // 2, 0.75)):
            cv2.ellipse(sky, (x + dx, y), (int(rx * scale), int(ry * scale)), 0, 0, 360, _bgr(shade), -1, cv2.LINE_AA)


def _reflect(layout: SceneLayout, image: np.ndarray, road_mask: np.ndarray, strength: float) -> np.ndarray:
    """Mirror what stands above the horizon onto the road, blurred and streaked vertically (wet asphalt)."""
    horizon, size = layout.horizon, layout.size
    mirrored = np.zeros_like(image)
    rows = min(horizon, size - horizon)
    mirrored[horizon:horizon + rows] = image[horizon - rows:horizon][::-1]
    mirrored = cv2.blur(mirrored, (max(1, size // 60), max(3, size // 12)))
    weight = road_mask[:, :, None] * strength
    return image * (1 - weight) + mirrored * weight


def _rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    streaks = np.zeros(image.shape[:2], np.float32)
    slant = rng.uniform(-0.35, 0.35)
    for _ in range(int(900 * (size / 256) ** 2)):
        x, y = rng.uniform(-size * 0.2, size * 1.2), rng.uniform(0, size)
        length = rng.uniform(0.03, 0.08) * size
        cv2.line(streaks, (int(x), int(y)), (int(x + slant * length), int(y + length)), rng.uniform(0.4, 1.0), 1, cv2.LINE_AA)
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0)[:, :, None] * 0.45
    hazy = image * 0.8 + 0.2 * np.array((0.6, 0.61, 0.63), np.float32)
    return hazy * (1 - streaks) + streaks * np.array((0.85, 0.86, 0.9), np.float32)


def render(layout: SceneLayout, condition: str, rng: np.random.Generator, resolution: int) -> np.ndarray:
    """Paint a layout in a condition ('day', 'night', 'rainy') as an (R, R, 3) uint8 RGB image."""
    look = LOOKS[condition]
    size = layout.size
    surfaces = np.zeros((size, size, 3), np.float32)
    mask = np.zeros((size, size), np.float32)
    _draw_surfaces(layout, surfaces, mask)
    surfaces = _saturate(surfaces, look.saturation) * np.array(look.light, np.float32)
    sky = _sky(layout, look)
    _clouds(layout, sky, look, rng)
    image = sky * (1 - mask[:, :, None]) + surfaces * mask[:, :, None]
    lights = _draw_lights(layout, look, rng)
    glow = cv2.GaussianBlur(lights, (0, 0), size / 80) * 1.5 + cv2.GaussianBlur(lights, (0, 0), size / 25) * 0.8
    image = np.maximum(image, lights) + glow
    if look.reflections:
        road = np.zeros((size, size), np.float32)
        cv2.fillPoly(road, [np.array([[_road_x(layout, layout.horizon, -1), layout.horizon],
                                      [_road_x(layout, layout.horizon, 1), layout.horizon],
                                      [_road_x(layout, size, 1), size], [_road_x(layout, size, -1), size]],
                                     dtype=np.int32)], 1.0)
        image = _reflect(layout, image, road, look.reflections)
    if look.rain:
        image = _rain(image, rng)
    image = image + rng.normal(0, 0.012, image.shape).astype(np.float32)
    small = cv2.resize(np.clip(image, 0, 1), (resolution, resolution), interpolation=cv2.INTER_AREA)
    return (small * 255 + 0.5).astype(np.uint8)


def render_scene(seed: int, index: int, condition: str, resolution: int) -> tuple[np.ndarray, SceneLayout]:
    """Scene number `index` of a seed: the same (seed, index, condition) always gives the same image."""
    rng = np.random.default_rng([seed, index, CONDITIONS.index(condition)])
    layout = sample_layout(rng, resolution * 2)
    return render(layout, condition, rng, resolution), layout


@dataclass(frozen=True)
class Domain:
    """One side of an unpaired dataset."""

    dataset: str
    side: str  # "A" or "B"
    condition: str
    stream: int  # seeds independent scenes per domain


DOMAINS = (Domain("day_night", "A", "day", 0), Domain("day_night", "B", "night", 1),
           Domain("clear_rainy", "A", "day", 2), Domain("clear_rainy", "B", "rainy", 3))
FIXED_PROMPTS = {"day_night": (PROMPTS["day"], PROMPTS["night"]), "clear_rainy": (PROMPTS["day"], PROMPTS["rainy"])}


def write_paired_reference(out: Path, count: int, resolution: int, seed: int,
                           progress: Callable[[Iterable], Iterable] = iter) -> None:
    """out/paired/{day_night,clear_rainy}/test_{A,B}: the SAME layouts in both conditions (paired layout).

    Not for training (the task is unpaired): a reference to score translations against, e.g. the
    edges or PSNR of a translated day scene against the same scene rendered at night.
    """
    prompts: dict[str, dict[str, str]] = {"day_night": {}, "clear_rainy": {}}
    for index in progress(range(count)):
        rng = np.random.default_rng([seed, index, len(DOMAINS)])
        layout = sample_layout(rng, resolution * 2)
        name = f"scene_{index:05d}.png"
        day = render(layout, "day", np.random.default_rng([seed, index, 0]), resolution)
        for dataset, target in (("day_night", "night"), ("clear_rainy", "rainy")):
            save_png(day, out / "paired" / dataset / "test_A" / name)
            save_png(render(layout, target, np.random.default_rng([seed, index, 1]), resolution),
                     out / "paired" / dataset / "test_B" / name)
            prompts[dataset][name] = PROMPTS[target]
    for dataset, captions in prompts.items():
        write_json(captions, out / "paired" / dataset / "test_prompts.json")


def build_scenes(out: Path, count: int, resolution: int, seed: int,
                 progress: Callable[[Iterable], Iterable] = iter) -> dict:
    """Render `count` scenes per domain (the last ~10% are test) and write the unpaired and captioned layouts."""
    test_count = max(1, round(count * TEST_FRACTION)) if count > 1 else 0
    jobs = [(domain, index) for domain in DOMAINS for index in range(count)]
    metadata: dict[str, list[dict]] = {"train": [], "test": []}
    for domain, index in progress(jobs):
        split = "test" if index >= count - test_count else "train"
        image, layout = render_scene(seed * 4 + domain.stream, index, domain.condition, resolution)
        name = f"{domain.condition}_{domain.stream}_{index:05d}.png"
        save_png(image, out / domain.dataset / f"{split}_{domain.side}" / name)
        link_or_copy(out / domain.dataset / f"{split}_{domain.side}" / name, out / "captioned" / split / name)
        metadata[split].append({"file_name": name, "text": PROMPTS[domain.condition], "condition": domain.condition,
                                "time": "night" if domain.condition == "night" else "day",
                                "weather": "rainy" if domain.condition == "rainy" else "clear",
                                "scene": layout.kind, "dataset": domain.dataset})
    for dataset, (prompt_a, prompt_b) in FIXED_PROMPTS.items():
        write_text(prompt_a, out / dataset / "fixed_prompt_a.txt")
        write_text(prompt_b, out / dataset / "fixed_prompt_b.txt")
        for folder in ("train_A", "train_B", "test_A", "test_B"):
            (out / dataset / folder).mkdir(parents=True, exist_ok=True)
    counts = {split: write_metadata(rows, out / "captioned" / split) for split, rows in metadata.items()}
    write_paired_reference(out, max(test_count, 1), resolution, seed)
    summary = {"resolution": resolution, "seed": seed, "per_domain": {"train": count - test_count, "test": test_count},
               "captioned": counts, "conditions": list(CONDITIONS), "paired_reference": max(test_count, 1),
               "note": "A and B are independent random scenes; clear = clear day, so captioned conditions are "
                       "day/night/rainy; paired/ holds the same layouts in both conditions, for evaluation only"}
    write_json(summary, out / "summary.json")
    write_text("Rendered by training/data/scenes.py (OpenCV drawing, no external images); "
               "same licence as this project.", out / "ATTRIBUTION.md")
    return summary
