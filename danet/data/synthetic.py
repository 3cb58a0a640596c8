"""The embedded default data set: synthetic street scenes written in the Cityscapes layout.

Each scene has a sky gradient, buildings with windows, road with lane markings, sidewalks, terrain, trees,
poles with signs or traffic lights, cars and persons at several depths, per-image lighting and noise, and void
pixels (ego vehicle, rectification border). Class colours overlap (grey sky, grey buildings, grey road, grey
cars), so a per-pixel colour lookup cannot solve it; shape, texture and position can.

Layout under ``<out_root>/cityscapes`` (as the official download, plus the seed's list files)::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_labelIds.png        official label ids
    gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_labelTrainIds.png   train ids, 255 = void
    {train,val}Images.txt  {train,val}Labels.txt  synthetic.json (settings, for idempotence)
"""
import json
import logging
import os
import shutil

import cv2
import numpy as np

from danet.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from danet.errors import UserError

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2
MANIFEST = "synthetic.json"
CITIES = {"train": ("alphaville", "betatown"), "val": ("gammaburg",)}

# Official Cityscapes label ids of what is drawn (the first two are void).
EGO, BORDER = 1, 2
ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    7, 8, 11, 17, 19, 20, 21, 22, 23, 24, 26,
)  # fmt: skip
USED_LABEL_IDS = (EGO, BORDER, ROAD, SIDEWALK, BUILDING, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)
USED_TRAIN_IDS = tuple(sorted({int(LABEL_ID_TO_TRAIN_ID[i]) for i in USED_LABEL_IDS} - {255}))

# Texture amplitude per label id: fine (pixel) noise and blobby (low-frequency) noise, in grey levels.
_FINE = np.zeros(256, np.float32)
_BLOB = np.zeros(256, np.float32)
_FINE[[ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, CAR, PERSON]] = (9, 5, 4, 14, 8, 2, 3)
_BLOB[[ROAD, VEGETATION, TERRAIN, BUILDING]] = (6, 28, 16, 5)


class _Scene:
    """One image being drawn: ``image`` float32 ``[H, W, 3]`` RGB, ``ids`` uint8 ``[H, W]`` label ids."""

    def __init__(self, rng, height, width):
        self.rng, self.h, self.w = rng, height, width
        self.image = np.zeros((height, width, 3), np.float32)
        self.ids = np.zeros((height, width), np.uint8)
        self.horizon = int(height * rng.uniform(0.36, 0.5))
        self.vanish_x = width * rng.uniform(0.4, 0.6)

    def colour(self, low, high):
        return tuple(float(c) for c in self.rng.uniform(low, high))

    def poly(self, points, label_id, colour):
        points = [np.round(np.asarray(points)).astype(np.int32)]
        cv2.fillPoly(self.ids, points, label_id)
        cv2.fillPoly(self.image, points, colour)

    def rect(self, x0, y0, x1, y1, label_id, colour):
        self.poly([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], label_id, colour)

    def circle(self, x, y, radius, label_id, colour):
        centre, radius = (int(round(x)), int(round(y))), max(1, int(round(radius)))
        cv2.circle(self.ids, centre, radius, label_id, -1)
        cv2.circle(self.image, centre, radius, colour, -1)

    def ground_y(self, depth):
        """Image row of the ground at relative depth ``depth`` (0 = horizon, 1 = bottom row)."""
        return self.horizon + depth * (self.h - self.horizon)

    def ground_x(self, depth, bottom_x):
        """Image column, at ``depth``, of a ground line that reaches the bottom row at ``bottom_x``."""
        return self.vanish_x + depth * (bottom_x - self.vanish_x)


def _draw_sky(s):
    if s.rng.random() < 0.4:  # overcast: grey, like buildings and road
        top = np.array(s.colour((150, 150, 155), (215, 215, 225)))
        bottom = top + s.rng.uniform(0, 25)
    else:
        top = np.array(s.colour((50, 100, 160), (110, 160, 230)))
        bottom = np.array(s.colour((150, 180, 200), (210, 225, 245)))
    t = np.linspace(0, 1, s.horizon + 1, dtype=np.float32)[:, None, None]
    s.image[: s.horizon + 1] = top * (1 - t) + bottom * t
    s.ids[: s.horizon + 1] = SKY


def _draw_buildings(s):
    x = -s.rng.uniform(0, 30)
    while x < s.w:
        bw = s.w * s.rng.uniform(0.08, 0.25)
        if s.rng.random() < 0.8:  # else a gap showing the sky
            top = s.horizon - s.h * s.rng.uniform(0.08, 0.4)
            base = s.rng.uniform(70, 200)
            wall = tuple(base + d for d in s.rng.uniform((-15, -15, -25), (25, 15, 20)))
            s.rect(x, top, x + bw, s.horizon + 2, BUILDING, wall)
            _draw_windows(s, int(x), int(top), int(x + bw), s.horizon, wall)
        x += bw


def _draw_windows(s, x0, y0, x1, y1, wall):
    x0, y0, x1 = max(x0, 0), max(y0, 0), min(x1, s.w)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return
    step_x, step_y = s.rng.integers(6, 16), s.rng.integers(7, 18)
    yy, xx = np.ogrid[0 : y1 - y0, 0 : x1 - x0]
    windows = ((yy % step_y) >= 3) & ((yy % step_y) < step_y - 2) & ((xx % step_x) >= 2) & ((xx % step_x) < step_x - 2)
    shade = s.rng.choice([0.45, 0.7, 1.35])  # dark, dim or lit windows
    region = s.image[y0:y1, x0:x1]
    region[windows] = np.clip(np.array(wall) * shade, 0, 255)


def _draw_ground(s):
    s.image[s.horizon + 1 :] = s.colour((110, 135, 80), (170, 195, 130))
    s.ids[s.horizon + 1 :] = TERRAIN
    road_l = s.vanish_x - s.w * s.rng.uniform(0.45, 0.8)
    road_r = s.vanish_x + s.w * s.rng.uniform(0.45, 0.8)
    walk = s.w * s.rng.uniform(0.15, 0.35)
    if s.rng.random() < 0.5:
        walk_colour = s.colour((150, 115, 135), (200, 160, 190))  # Cityscapes-like pinkish paving
    else:
        walk_colour = tuple([float(s.rng.uniform(110, 180))] * 3)
    top, bottom = s.horizon, s.h
    s.poly([(road_l - walk, bottom), (road_r + walk, bottom), (s.vanish_x + 4, top), (s.vanish_x - 4, top)],
           SIDEWALK, walk_colour)  # fmt: skip
    grey = float(s.rng.uniform(55, 125))
    road_colour = tuple(grey + d for d in s.rng.uniform(-6, 6, 3))
    s.poly([(road_l, bottom), (road_r, bottom), (s.vanish_x + 1, top), (s.vanish_x - 1, top)], ROAD, road_colour)
    # Dashed centre line: its dashes grow with depth, as in perspective.
    line_x, paint = s.vanish_x + s.rng.uniform(-0.1, 0.1) * s.w, s.colour((200, 200, 190), (245, 245, 235))
    depth = 0.05
    while depth < 1:
        end = min(1.0, depth * 1.35)
        half0, half1 = 0.006 * s.w * depth, 0.006 * s.w * end
        x0, x1 = s.ground_x(depth, line_x), s.ground_x(end, line_x)
        s.poly([(x0 - half0, s.ground_y(depth)), (x0 + half0, s.ground_y(depth)),
                (x1 + half1, s.ground_y(end)), (x1 - half1, s.ground_y(end))], ROAD, paint)  # fmt: skip
        depth = end * 1.3
    return road_l, road_r, walk


def _draw_tree(s, x, ground):
    depth = (ground - s.horizon) / (s.h - s.horizon)
    size = s.h * (0.08 + 0.25 * depth)
    trunk = s.colour((60, 45, 30), (100, 80, 60))
    s.rect(x - size * 0.06, ground - size * 1.2, x + size * 0.06, ground, VEGETATION, trunk)
    if s.rng.random() < 0.25:  # autumn: olive/brown, close to terrain and buildings
        leaves = s.colour((110, 100, 40), (160, 140, 80))
    else:
        leaves = s.colour((30, 80, 15), (90, 150, 60))
    cx, cy = x, ground - size * 1.4
    for _ in range(int(s.rng.integers(3, 8))):
        dx, dy = s.rng.normal(0, size * 0.3, 2)
        s.circle(cx + dx, cy + dy, size * s.rng.uniform(0.3, 0.55), VEGETATION, leaves)


def _draw_pole(s, x, ground):
    depth = (ground - s.horizon) / (s.h - s.horizon)
    # Thicker than real poles and signs, so that at the demo's 128x256 they cover about a cell of the stride-8
    # feature map; at real proportions (1-2 pixels there) the demo's model learned none of them.
    height, half = s.h * (0.15 + 0.9 * depth), s.w * (0.006 + 0.01 * depth)
    grey = float(s.rng.uniform(90, 170))
    s.rect(x - half, ground - height, x + half, ground, POLE, (grey, grey, grey))
    box, top = s.w * (0.03 + 0.04 * depth), ground - height
    if s.rng.random() < 0.4:  # traffic light: dark box with one lit lamp
        s.rect(x - box * 0.5, top, x + box * 0.5, top + box * 2.2, LIGHT, s.colour((20, 20, 20), (50, 50, 50)))
        lamp = [(230, 40, 30), (240, 180, 30), (40, 220, 90)][int(s.rng.integers(3))]
        s.circle(x, top + box * (0.4 + 0.7 * s.rng.integers(3)), box * 0.3, LIGHT, lamp)
    else:
        colour = [(220, 200, 30), (30, 70, 180), (200, 30, 30), (230, 230, 230)][int(s.rng.integers(4))]
        if s.rng.random() < 0.5:
            s.circle(x, top + box * 0.6, box * 0.7, SIGN, colour)
        else:
            s.rect(x - box * 0.7, top, x + box * 0.7, top + box * 1.2, SIGN, colour)


def _draw_car(s, x, ground):
    depth = (ground - s.horizon) / (s.h - s.horizon)
    width = s.w * 0.3 * depth * s.rng.uniform(0.8, 1.2)
    height = width * s.rng.uniform(0.5, 0.7)
    base = [(230, 230, 230), (30, 30, 35), (120, 120, 125), (170, 30, 30), (30, 60, 150), (40, 90, 60)]
    body = tuple(c + d for c, d in zip(base[int(s.rng.integers(len(base)))], s.rng.uniform(-15, 15, 3)))
    x0, x1 = x - width / 2, x + width / 2
    s.rect(x0, ground - height * 0.6, x1, ground - height * 0.1, CAR, body)
    s.poly([(x0 + width * 0.12, ground - height * 0.6), (x1 - width * 0.12, ground - height * 0.6),
            (x1 - width * 0.25, ground - height), (x0 + width * 0.25, ground - height)], CAR, body)  # fmt: skip
    s.rect(x0 + width * 0.3, ground - height * 0.92, x1 - width * 0.3, ground - height * 0.64, CAR, (40, 50, 60))
    for wheel_x in (x0 + width * 0.2, x1 - width * 0.2):
        s.circle(wheel_x, ground - height * 0.12, height * 0.16, CAR, (15, 15, 15))


def _draw_person(s, x, ground):
    depth = (ground - s.horizon) / (s.h - s.horizon)
    height = s.h * (0.06 + 0.5 * depth) * s.rng.uniform(0.85, 1.1)
    half = height * 0.13
    trousers, shirt = s.colour((10, 10, 20), (80, 80, 120)), s.colour((20, 20, 20), (240, 240, 240))
    s.rect(x - half, ground - height * 0.45, x - half * 0.15, ground, PERSON, trousers)
    s.rect(x + half * 0.15, ground - height * 0.45, x + half, ground, PERSON, trousers)
    s.rect(x - half * 1.2, ground - height * 0.82, x + half * 1.2, ground - height * 0.45, PERSON, shirt)
    s.circle(x, ground - height * 0.9, height * 0.09, PERSON, s.colour((90, 60, 40), (240, 200, 170)))


def _draw_objects(s, road_l, road_r, walk):
    """Trees, poles, persons on the sidewalks and cars on the road, far ones first so near ones occlude them."""
    objects = []
    for kind, count in (("tree", (1, 4)), ("pole", (2, 7)), ("person", (1, 6)), ("car", (0, 5))):
        for _ in range(int(s.rng.integers(*count))):
            depth = s.rng.uniform(0.12, 0.95)
            side = s.rng.choice([-1, 1])
            if kind == "car":
                x = s.ground_x(depth, s.rng.uniform(road_l + 0.1 * s.w, road_r - 0.1 * s.w))
            else:
                edge = road_l if side < 0 else road_r
                x = s.ground_x(depth, edge + side * walk * s.rng.uniform(0.2, 0.9))
            objects.append((depth, kind, x))
    draw = {"tree": _draw_tree, "pole": _draw_pole, "person": _draw_person, "car": _draw_car}
    for depth, kind, x in sorted(objects, key=lambda o: o[0]):
        draw[kind](s, x, s.ground_y(depth))


def _finish(s):
    """Textures, lighting, noise and void regions. Returns the uint8 RGB image."""
    fine = s.rng.standard_normal((s.h, s.w)).astype(np.float32)
    blob = s.rng.standard_normal((s.h // 6 + 2, s.w // 6 + 2)).astype(np.float32)
    blob = cv2.resize(blob, (s.w, s.h), interpolation=cv2.INTER_LINEAR)
    walk_lines = np.zeros((s.h, s.w), np.float32)
    walk_lines[::7] = walk_lines[:, ::13] = -30  # paving joints
    texture = _FINE[s.ids] * fine + _BLOB[s.ids] * blob + (s.ids == SIDEWALK) * walk_lines
    s.image += texture[:, :, None]
    ego = s.h * s.rng.uniform(0.05, 0.12)
    ego_ids = np.zeros_like(s.ids)
    cv2.ellipse(ego_ids, (s.w // 2, int(s.h + ego * 0.3)), (int(s.w * 0.7), int(ego * 1.3)), 0, 180, 360, EGO, -1)
    s.image[ego_ids == EGO] = s.colour((15, 15, 20), (45, 45, 55))
    s.ids[ego_ids == EGO] = EGO
    shade = np.linspace(1 - 0.25 * s.rng.random(), 1 + 0.25 * s.rng.random(), s.w, dtype=np.float32)
    if s.rng.random() < 0.5:
        shade = shade[::-1]
    gain = s.rng.uniform(0.65, 1.3) * s.rng.uniform(0.9, 1.1, 3).astype(np.float32)
    s.image *= shade[None, :, None] * gain
    s.image += s.rng.normal(0, s.rng.uniform(2, 8), s.image.shape).astype(np.float32)
    image = np.clip(s.image + 0.5, 0, 255).astype(np.uint8)
    border = max(1, s.h // 128)
    for region in ((slice(0, border),), (slice(-border, None),), (slice(None), slice(0, border)),
                   (slice(None), slice(-border, None))):  # fmt: skip
        image[region] = 0
        s.ids[region] = BORDER
    return image


def render_scene(rng, height, width):
    """One synthetic scene: (uint8 ``[H, W, 3]`` RGB image, uint8 ``[H, W]`` official label ids)."""
    scene = _Scene(rng, height, width)
    _draw_sky(scene)
    _draw_buildings(scene)
    _draw_objects(scene, *_draw_ground(scene))
    return _finish(scene), scene.ids


def _sample_name(split, index):
    """(city, file stem) of sample ``index`` of ``split``, e.g. ("alphaville", "alphaville_000003_000019")."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_000019"


def _write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array):
        raise UserError(f"cannot write {path}; check the folder is writable and the disk not full")


def _write_split(root, split, count, height, width, seed):
    images, labels = [], []
    for index in range(count):
        # One stream per image, so a larger set keeps the images of a smaller one.
        rng = np.random.default_rng([seed, 0 if split == "train" else 1, index])
        image, ids = render_scene(rng, height, width)
        city, stem = _sample_name(split, index)
        image_rel = f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
        label_rel = f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png"
        _write_png(os.path.join(root, image_rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        _write_png(os.path.join(root, f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"), ids)
        _write_png(os.path.join(root, label_rel), LABEL_ID_TO_TRAIN_ID[ids])
        images.append(image_rel)
        labels.append(label_rel)
    pairs = sorted(zip(images, labels))  # sorted by path, as tools/prepare_cityscapes.py writes them
    for name, paths in ((f"{split}Images.txt", [i for i, _ in pairs]), (f"{split}Labels.txt", [la for _, la in pairs])):
        with open(os.path.join(root, name), "w", encoding="utf-8") as f:
            f.write("".join(p + "\n" for p in paths))


def make_synthetic_dataset(out_root, num_train=40, num_val=12, height=256, width=512, seed=0):
    """Writes the synthetic set to ``<out_root>/cityscapes`` and returns that folder.

    Same arguments -> byte-identical files. Does nothing if the folder already holds a set made with the same
    settings; replaces a synthetic set made with other settings; refuses to touch a folder that is not synthetic.
    """
    settings = {"generator_version": GENERATOR_VERSION, "num_train": int(num_train), "num_val": int(num_val),
                "height": int(height), "width": int(width), "seed": int(seed)}  # fmt: skip
    if min(height, width) < 32 or num_train < 1 or num_val < 1:
        raise UserError(f"synthetic set needs at least 1 train and 1 val image of at least 32x32, got {settings}")
    root = os.path.join(out_root, "cityscapes")
    manifest = os.path.join(root, MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            if json.load(f) == settings:
                logger.info("synthetic data set already in %s, same settings: nothing to do", root)
                return root
        logger.info("replacing the synthetic data set in %s (settings changed)", root)
        os.remove(manifest)
        for sub in ("leftImg8bit", "gtFine"):
            shutil.rmtree(os.path.join(root, sub), ignore_errors=True)
    elif os.path.isdir(root) and os.listdir(root):
        raise UserError(f"{root} exists and is not a synthetic data set (no {MANIFEST}); choose another --out")
    _write_split(root, "train", num_train, height, width, seed)
    _write_split(root, "val", num_val, height, width, seed)
    with open(manifest, "w", encoding="utf-8") as f:  # written last: an interrupted run is redone
        json.dump(settings, f, indent=1, sort_keys=True)
    logger.info("wrote %d train + %d val synthetic images (%dx%d) to %s", num_train, num_val, height, width, root)
    return root
