"""``bench.py ocr``: OCR character accuracy and throughput (the [ocr] extra).

Images are rendered with Pillow in a Chinese font from sentences of the sample corpus (its
Markdown and text files, Chinese sentences of 8 to 28 characters, in file order), two
sentences per image, one a line, in three sets:

- ``small``: 22 px text on white;
- ``large``: 34 px text on white;
- ``pattern``: 22 px text over a light background pattern (a grey grid and speckles, like a
  screenshot of a styled page or a photocopy).

Each image is read by the package's own path (``OcrReader``: engine, reading order, minimum
confidence). Accuracy = 1 - (Levenshtein distance / reference length), summed over all images
(whitespace ignored; the text is compared in order, so lines read out of order count as
errors); the target is
>= 0.95, reported, never asserted. The same boxes are also scored at other minimum
confidences, and three images with nothing readable (scribbles, text blurred past reading,
the pattern alone) count the garbage characters each minimum keeps: together they are how the
default of ``RAG_INGEST__OCR_MIN_CONFIDENCE`` was chosen.
Throughput is images (pages) per second after one warm-up image, with the engine's own
threads on all cores of this machine; the model load time is reported apart.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
from pathlib import Path
from typing import Any

from .common import (
    REPO,
    RESULTS,
    latency_stats,
    load_average,
    machine_info,
    measured,
    met,
    target,
    timed,
    write_results,
)

FONTS = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
)
SETS = {"small": (22, False), "large": (34, False), "pattern": (22, True)}
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)
_SENTENCE_END = re.compile(r"(?<=[。！？；])|\n")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_MARKUP = re.compile(r"[#*`>\[\]|]|^\s*[-\d.]+\s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--per-set", type=int, default=8, help="images in each of the 3 sets")
    parser.add_argument("--corpus", type=Path, default=REPO / "corpus")
    parser.add_argument("--font", type=Path, default=None, help="a CJK font (.ttc/.ttf)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the background pattern")
    parser.add_argument("--out", type=Path, default=RESULTS / "ocr.json")


def levenshtein(a: str, b: str) -> int:
    """Edits (insert, delete, substitute one character) that turn ``a`` into ``b``.

    >>> levenshtein("退货运费", "退款运费"), levenshtein("", "abc"), levenshtein("ab", "ab")
    (1, 3, 0)
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    """Text as compared: no whitespace. The engine may add or drop spaces, and the reader joins
    lines it takes for one wrapped sentence; lines read out of order still differ."""
    return "".join(text.split())


def corpus_sentences(corpus: Path, limit: int) -> list[str]:
    """Distinct Chinese sentences of the corpus's .md and .txt files, in a stable order."""
    found: list[str] = []
    seen: set[str] = set()
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".md", ".txt"))
    for path in files:
        if path.name == "README.md":
            continue
        for piece in _SENTENCE_END.split(path.read_text(encoding="utf-8")):
            sentence = _MARKUP.sub("", piece).strip()
            if 8 <= len(sentence) <= 28 and len(_CJK.findall(sentence)) >= 6:
                if sentence not in seen:
                    seen.add(sentence)
                    found.append(sentence)
                    if len(found) == limit:
                        return found
    return found


def find_font(explicit: Path | None) -> Path:
    for path in ([explicit] if explicit else []) + list(FONTS):
        if path.is_file():
            return path
    raise SystemExit("no CJK font: apt-get install -y fonts-wqy-microhei, or pass --font")


def render(lines: list[str], font: Path, size: int, pattern: bool, rng: random.Random) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    face = ImageFont.truetype(str(font), size)
    step = int(size * 1.8)
    width = max(int(face.getlength(line)) for line in lines) + 2 * size
    image = Image.new("L", (width, step * len(lines) + size), 255)
    draw = ImageDraw.Draw(image)
    if pattern:
        for x in range(0, width, 14):
            draw.line([(x, 0), (x, image.height)], fill=228)
        for y in range(0, image.height, 14):
            draw.line([(0, y), (width, y)], fill=228)
        for _ in range(width * image.height // 60):
            xy = (rng.randrange(width), rng.randrange(image.height))
            draw.point(xy, fill=rng.randrange(190, 235))
    for n, line in enumerate(lines):
        draw.text((size, size // 2 + n * step), line, font=face, fill=30)
    return image.convert("RGB")


def noise_images(font: Path, rng: random.Random) -> dict[str, Any]:
    """Images with nothing readable, for what the minimum confidence must drop: scribbles
    shaped like handwriting, text blurred past reading, and the background pattern alone."""
    from PIL import Image, ImageDraw, ImageFont

    scribbles = Image.new("L", (700, 260), 255)
    draw = ImageDraw.Draw(scribbles)
    for row in range(4):
        for x in range(20, 660, 22):
            points = [(x + rng.randrange(20), 30 + row * 60 + rng.randrange(25)) for _ in range(5)]
            draw.line(points, fill=0, width=2)
    blurred = Image.new("L", (700, 120), 255)
    ImageDraw.Draw(blurred).text(
        (20, 30), "退货运费由商家承担", font=ImageFont.truetype(str(font), 30), fill=0
    )
    return {
        "scribbles": scribbles.convert("RGB"),
        "blurred": blurred.resize((140, 24)).resize((700, 120)).convert("RGB"),
        "pattern_only": render([" "], font, 22, True, rng).resize((600, 200)),
    }


def run(args: argparse.Namespace) -> int:
    from rag_pipeline.ocr import DEFAULT_MIN_CONFIDENCE, OcrReader, page_text, to_rgb

    start_load = load_average()
    font = find_font(args.font)
    sentences = corpus_sentences(args.corpus, 2 * args.per_set * len(SETS))
    if len(sentences) < 2 * args.per_set * len(SETS):
        raise SystemExit(f"only {len(sentences)} sentences in {args.corpus}: lower --per-set")
    rng = random.Random(args.seed)
    images: list[tuple[str, str, Any]] = []
    pairs = iter(zip(sentences[::2], sentences[1::2], strict=True))
    for name, (size, pattern) in SETS.items():
        for _ in range(args.per_set):
            lines = list(next(pairs))
            images.append((name, "\n".join(lines), render(lines, font, size, pattern, rng)))

    reader = OcrReader(DEFAULT_MIN_CONFIDENCE)
    _, load_s = timed(lambda: reader.boxes(to_rgb(images[0][2])))  # model load + warm-up

    def read_all() -> list[tuple[list[Any], float]]:
        out = []
        for _, _, image in images:
            boxes, seconds = timed(lambda image=image: reader.boxes(to_rgb(image)))
            out.append((boxes, seconds))
        return out

    results, timing = measured(read_all)
    per_image = []
    totals = {t: [0, 0] for t in THRESHOLDS}  # threshold -> [edits, reference chars]
    by_set: dict[str, list[int]] = {name: [0, 0] for name in SETS}
    for (name, reference, _), (boxes, seconds) in zip(images, results, strict=True):
        expected = normalise(reference)
        for threshold in THRESHOLDS:
            got = normalise(page_text(boxes, threshold).text)
            totals[threshold][0] += levenshtein(expected, got)
            totals[threshold][1] += len(expected)
        got = normalise(page_text(boxes, DEFAULT_MIN_CONFIDENCE).text)
        edits = levenshtein(expected, got)
        by_set[name][0] += edits
        by_set[name][1] += len(expected)
        per_image.append(
            {
                "set": name,
                "reference": reference,
                "ocr": page_text(boxes, DEFAULT_MIN_CONFIDENCE).text,
                "edits": edits,
                "box_confidences": [round(b.confidence, 3) for b in boxes],
                "seconds": round(seconds, 3),
            }
        )

    def accuracy(edits: int, chars: int) -> float:
        return 1 - edits / chars

    # Characters the engine "reads" in images with nothing readable: each one kept is garbage.
    noise = {}
    for name, image in noise_images(font, rng).items():
        boxes = reader.boxes(to_rgb(image))
        noise[name] = {
            "box_confidences": [round(b.confidence, 3) for b in boxes],
            "chars_kept_by_min_confidence": {
                f"{t:g}": len(normalise(page_text(boxes, t).text)) for t in THRESHOLDS
            },
        }

    overall = accuracy(*totals[DEFAULT_MIN_CONFIDENCE])
    seconds = [r["seconds"] for r in per_image]
    result = {
        "benchmark": "ocr",
        "machine": machine_info(
            ("rapidocr-onnxruntime", "onnxruntime", "opencv-python", "pillow", "numpy"),
            start_load,
        ),
        "font": font.name,
        "images": len(images),
        "sets": {name: {"font_px": s, "pattern": p} for name, (s, p) in SETS.items()},
        "reference_chars": totals[DEFAULT_MIN_CONFIDENCE][1],
        "min_confidence": DEFAULT_MIN_CONFIDENCE,
        "accuracy": round(overall, 4),
        "accuracy_by_set": {n: round(accuracy(*v), 4) for n, v in by_set.items()},
        "accuracy_by_min_confidence": {f"{t:g}": round(accuracy(*v), 4) for t, v in totals.items()},
        "noise_images": noise,
        "model_load_and_first_image_s": round(load_s, 3),
        "images_per_s": round(len(images) / timing["seconds"], 3),
        "images_per_cpu_s": round(len(images) / timing["cpu_s"], 3) if timing["cpu_s"] else None,
        "per_image_latency": latency_stats(seconds),
        "timing": timing,
        "targets": {"accuracy": target(overall, ">=", 0.95)},
        "misread": [r for r in per_image if r["edits"]],
    }
    write_results(args.out, result)
    print(
        f"OCR accuracy {overall:.2%} over {len(images)} images "
        f"({', '.join(f'{n} {v:.2%}' for n, v in result['accuracy_by_set'].items())}); "
        f"target >= 95% {met(result['targets']['accuracy'])}"
    )
    print(
        f"throughput {result['images_per_s']} images/s "
        f"(median {statistics.median(seconds):.2f} s each); "
        f"model load + first image {load_s:.1f} s"
    )
    return 0
