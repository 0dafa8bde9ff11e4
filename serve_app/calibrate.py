"""`face-calibrate`: what a verification threshold does on an operator's own photos.

    face-calibrate PHOTOS [--enroll-photos 3] [--target-far 0.001] [--out calibration]

PHOTOS is a folder with one sub-folder of photos per person, or a CSV of `path,person`
rows (paths relative to the CSV). Each photo is embedded in this process by the
service's own pipeline and settings (model pack, detector, quality gate). Per person,
the first photos (by name) that pass the enrollment gate become the template, as
`POST /enroll_identity` builds it; every other photo of anyone is a probe. A probe
against its own person's template is a genuine trial, against anyone else's an
impostor trial. The answer (printed, and written as JSON with a PNG of the score
distributions and the ROC curve) gives TAR at fixed FARs, the EER, the threshold for
`--target-far`, and what the current threshold does.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from serve_app.calibration import (
    OperatingPoint,
    equal_error_rate,
    min_impostor_trials,
    rates_at,
    roc,
    tar_at_far,
    threshold_for_far,
)
from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, Face, FacePipeline, load_pipeline
from serve_app.errors import DomainError, InvalidImage
from serve_app.images import load_image
from serve_app.bulk_ingest import list_images
from serve_app.quality import QualityLimits, failures
from serve_app.similarity import template_of, weakest_pair

REPORTED_FARS = (1e-1, 1e-2, 1e-3)
_BATCH = 16
_NO_FACE = frozenset({"no_face_detected", "face_too_small"})

console = Console()


class Refused(Exception):
    """The input cannot be calibrated on; the message says why."""


@dataclass(frozen=True)
class Photo:
    path: Path
    person: str


def read_labels(source: Path) -> list[Photo]:
    """One sub-folder per person, or a CSV of path,person (an optional header row)."""
    if source.is_dir():
        return [Photo(Path(path), folder.name)
                for folder in sorted(p for p in source.iterdir() if p.is_dir())
                for path in list_images(str(folder))]
    if source.is_file() and source.suffix.lower() == ".csv":
        photos = []
        with source.open(newline="") as stream:
            for number, row in enumerate(csv.reader(stream), start=1):
                if not row or (number == 1 and [c.strip().lower() for c in row] == ["path", "person"]):
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise Refused(f"{source}:{number}: expected `path,person`, got {row}")
                path = Path(row[0].strip())
                photos.append(Photo(path if path.is_absolute() else source.parent / path, row[1].strip()))
        return photos
    raise Refused(f"{source} is neither a folder of per-person folders nor a .csv of path,person")


@dataclass
class Embedded:
    faces: dict[Path, Face] = field(default_factory=dict)
    not_found: dict[Path, str] = field(default_factory=dict)  # photo -> why no face


def _read_all(photos: Sequence[Photo], settings: Settings) -> dict[Path, bytes]:
    """Every photo's bytes, checked by the service's own decoder; refuses unreadable ones."""
    data: dict[Path, bytes] = {}
    unreadable: list[str] = []
    for photo in track(photos, description="Reading photos", console=console, transient=True):
        try:
            content = photo.path.read_bytes()
            load_image(content, settings.max_image_pixels)
            data[photo.path] = content
        except OSError as error:
            unreadable.append(f"{photo.path} ({error.strerror or error})")
        except InvalidImage as error:
            unreadable.append(f"{photo.path} ({error.code})")
    if unreadable:
        raise Refused("cannot read these photos (fix or remove them): " + "; ".join(unreadable))
    return data


def _batches(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def embed_photos(pipeline: FacePipeline, data: dict[Path, bytes]) -> Embedded:
    embedded = Embedded()
    paths = list(data)
    batches = list(_batches(paths, _BATCH))
    for batch in track(batches, description="Embedding photos", console=console):
        for path, result in zip(batch, pipeline.run([EmbedRequest(data[p]) for p in batch]), strict=True):
            try:
                embedded.faces[path] = result.largest()
            except DomainError as error:
                if error.code not in _NO_FACE:
                    raise
                embedded.not_found[path] = error.code
    return embedded


@dataclass
class Trials:
    genuine: np.ndarray
    impostor: np.ndarray
    templates: int
    probes: int
    low_quality: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refused_enrollments: dict[str, dict[str, Any]] = field(default_factory=dict)


def build_trials(photos: Sequence[Photo], embedded: Embedded, settings: Settings, enroll_photos: int) -> Trials:
    """Templates as enrollment builds them; each remaining photo a probe against all."""
    limits = QualityLimits.from_settings(settings)
    by_person: dict[str, list[Path]] = {}
    for photo in sorted(photos, key=lambda p: (p.person, str(p.path))):
        if photo.path in embedded.faces:
            by_person.setdefault(photo.person, []).append(photo.path)
    trials = Trials(np.zeros(0), np.zeros(0), 0, 0)
    templates: dict[str, np.ndarray] = {}
    probes: list[tuple[str, np.ndarray]] = []
    for person, paths in by_person.items():
        gated: list[Path] = []
        for path in paths:
            failed = failures(embedded.faces[path].quality, limits)
            if failed and settings.quality_gate_enrollment:
                trials.low_quality.setdefault(person, []).append(
                    {"photo": str(path), "failed": [f.describe() for f in failed]})
            else:
                gated.append(path)
        # At least one photo of each person is left to probe with, where there are two.
        enrolled = gated[:min(enroll_photos, max(1, len(paths) - 1))]
        if enrolled:
            vectors = np.stack([embedded.faces[path].embedding for path in enrolled])
            consistency, pair = weakest_pair(vectors) if len(enrolled) > 1 else (1.0, (0, 0))
            if consistency >= settings.enroll_min_similarity:
                templates[person] = template_of(vectors)
            else:
                trials.refused_enrollments[person] = {"photos": [str(enrolled[i]) for i in pair],
                                                      "similarity": round(consistency, 4)}
                enrolled = []
        # A person who could not enroll still probes, as an impostor against everyone else.
        probes += [(person, embedded.faces[path].embedding) for path in paths if path not in enrolled
                   and not (settings.quality_gate_probes and failures(embedded.faces[path].quality, limits))]
    if len(templates) < 2:
        raise Refused(f"{len(templates)} people could be enrolled; calibration needs at least 2")
    if not probes:
        raise Refused("no photo is left to probe with: give each person more photos than --enroll-photos")
    names = list(templates)
    matrix = np.stack([templates[name] for name in names])
    # The service's similarity scale, (1 + cos) / 2, for every probe against every template.
    similarities = (1.0 + np.stack([vector for _, vector in probes]) @ matrix.T) / 2.0
    own = np.array([[name == person for name in names] for person, _ in probes])
    trials.genuine = np.clip(similarities[own], 0.0, 1.0)
    trials.impostor = np.clip(similarities[~own], 0.0, 1.0)
    trials.templates, trials.probes = len(names), len(probes)
    return trials


def _point(point: OperatingPoint) -> dict[str, float]:
    return {"threshold": round(point.threshold, 4), "tar": round(point.tar, 4), "far": round(point.far, 6)}


def report(trials: Trials, threshold: float, target_far: float) -> dict[str, Any]:
    genuine, impostor = trials.genuine, trials.impostor
    if genuine.size == 0:
        raise Refused("no genuine trial: every probe's person failed to enroll")
    tar_at: list[dict[str, Any]] = []
    for far in REPORTED_FARS:
        point = tar_at_far(genuine, impostor, far)
        tar_at.append({"far_target": far, **_point(point)} if point else {
            "far_target": far, "tar": None,
            "reason": f"needs at least {min_impostor_trials(far)} impostor trials, have {impostor.size}"})
    target = rates_at(genuine, impostor, threshold_for_far(impostor, target_far))
    target_answer: dict[str, Any] = {"far_target": target_far, **_point(target)}
    if impostor.size < min_impostor_trials(target_far):
        target_answer["warning"] = (f"only {impostor.size} impostor trials: a FAR below "
                                    f"{1 / impostor.size:.2g} cannot be measured; this is the lowest "
                                    "threshold that accepted no impostor")
    eer = equal_error_rate(genuine, impostor)
    return {
        "similarity_scale": "(1 + cosine) / 2; verified when similarity >= threshold",
        "trials": {"genuine": int(genuine.size), "impostor": int(impostor.size),
                   "templates": trials.templates, "probes": trials.probes},
        "tar_at_far": tar_at,
        "eer": {"rate": round(eer.far, 4), "threshold": round(eer.threshold, 4)},
        "target": target_answer,
        "current": _point(rates_at(genuine, impostor, threshold)),
        "scores": {
            "genuine": {"min": round(float(genuine.min()), 4), "median": round(float(np.median(genuine)), 4)},
            "impostor": {"max": round(float(impostor.max()), 4), "median": round(float(np.median(impostor)), 4)},
        },
    }


def plot(trials: Trials, answer: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    current, target = answer["current"]["threshold"], answer["target"]["threshold"]
    figure, (scores, curve_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    bins = np.linspace(0.0, 1.0, 101)
    scores.hist(trials.impostor, bins=bins, density=True, alpha=0.6, label=f"impostor ({trials.impostor.size})")
    scores.hist(trials.genuine, bins=bins, density=True, alpha=0.6, label=f"genuine ({trials.genuine.size})")
    scores.axvline(current, color="black", linestyle="--", label=f"current threshold {current}")
    scores.axvline(target, color="red", linestyle=":", label=f"threshold for FAR {answer['target']['far_target']:g}")
    scores.set(xlabel="similarity (1 + cos) / 2", ylabel="density", title="Score distributions")
    scores.legend(fontsize=8)
    curve = roc(trials.genuine, trials.impostor)
    floor = 1.0 / trials.impostor.size
    curve_axis.plot(np.maximum(curve.far, floor), curve.tar, drawstyle="steps-post")
    for name, marker in (("current", "ko"), ("target", "r^")):
        point = answer[name]
        curve_axis.plot(max(point["far"], floor), point["tar"], marker, label=f"{name}: {point['threshold']}")
    curve_axis.set_xscale("log")
    curve_axis.set(xlim=(floor, 1.0), ylim=(0.0, 1.02), xlabel=f"FAR (floor 1/{trials.impostor.size} impostor trials)",
                   ylabel="TAR", title="ROC")
    curve_axis.grid(True, which="both", alpha=0.3)
    curve_axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _print(answer: dict[str, Any]) -> None:
    inputs = answer["input"]
    console.print(f"[bold]{inputs['people']} people, {inputs['photos']} photos[/bold]: "
                  f"{answer['trials']['genuine']} genuine and {answer['trials']['impostor']} impostor trials "
                  f"({answer['trials']['templates']} templates of up to {inputs['enroll_photos']} photos)")
    if inputs["faces_not_found"]:
        console.print(f"[yellow]{len(inputs['faces_not_found'])} photos without a face[/yellow] (listed in the JSON)")
    refused = inputs["low_quality_enrollment_photos"]
    if refused:
        console.print(f"[yellow]{sum(map(len, refused.values()))} photos of {len(refused)} people refused by the "
                      "enrollment quality gate[/yellow] (listed in the JSON; they still probe)")
    if inputs["refused_enrollments"]:
        console.print(f"[yellow]{len(inputs['refused_enrollments'])} enrollments refused: their photos disagree"
                      "[/yellow] (listed in the JSON)")
    table = Table("operating point", "threshold", "TAR", "FAR", title="Similarity scale (1 + cos) / 2")
    for row in answer["tar_at_far"]:
        if row["tar"] is None:
            table.add_row(f"FAR {row['far_target']:g}", "-", "-", row["reason"])
        else:
            table.add_row(f"FAR {row['far_target']:g}", f"{row['threshold']:.4f}", f"{row['tar']:.4f}", f"{row['far']:.6f}")
    eer = answer["eer"]
    table.add_row("EER", f"{eer['threshold']:.4f}", f"{1 - eer['rate']:.4f}", f"{eer['rate']:.4f}")
    for name in ("target", "current"):
        point = answer[name]
        label = f"target FAR {point['far_target']:g}" if name == "target" else "current (VERIFY_HI_THRESHOLD)"
        table.add_row(label, f"{point['threshold']:.4f}", f"{point['tar']:.4f}", f"{point['far']:.6f}")
    console.print(table)
    if "warning" in answer["target"]:
        console.print(f"[yellow]{answer['target']['warning']}[/yellow]")


def calibrate(source: Path, out: Path, enroll_photos: int, target_far: float, threshold: float | None,
              settings: Settings, pipeline: FacePipeline | None = None) -> dict[str, Any]:
    photos = read_labels(source)
    people = {photo.person for photo in photos}
    if len(people) < 2:
        raise Refused(f"{source} names {len(people)} people; calibration needs at least 2")
    data = _read_all(photos, settings)
    pipeline = pipeline or load_pipeline(settings)
    embedded = embed_photos(pipeline, data)
    trials = build_trials(photos, embedded, settings, enroll_photos)
    current = settings.verify_hi_threshold if threshold is None else threshold
    answer = {
        "input": {
            "source": str(source), "people": len(people), "photos": len(photos), "enroll_photos": enroll_photos,
            "model": {"recognizer": pipeline.recognizer.fingerprint.name,
                      "sha256": pipeline.recognizer.fingerprint.sha256},
            "faces_not_found": {str(path): why for path, why in embedded.not_found.items()},
            "low_quality_enrollment_photos": trials.low_quality,
            "refused_enrollments": trials.refused_enrollments,
        },
        **report(trials, current, target_far),
        "plot": "calibration.png",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "calibration.json").write_text(json.dumps(answer, indent=2) + "\n")
    plot(trials, answer, out / "calibration.png")
    return answer


def command(
    photos: Annotated[Path, typer.Argument(help="folder of per-person folders, or a CSV of path,person")],
    enroll_photos: Annotated[int, typer.Option(min=1, help="photos per template, as at enrollment")] = 3,
    target_far: Annotated[float, typer.Option(min=1e-9, max=0.5, help="false-accept rate to find the threshold for")]
    = 1e-3,
    threshold: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                    help="threshold to evaluate [default: VERIFY_HI_THRESHOLD]")]
    = None,
    out: Annotated[Path, typer.Option(help="folder for calibration.json and calibration.png")] = Path("calibration"),
) -> None:
    """Score genuine and impostor trials on labelled photos; choose VERIFY_HI_THRESHOLD."""
    try:
        answer = calibrate(photos, out, enroll_photos, target_far, threshold, Settings())
    except Refused as refusal:
        console.print(f"[red]refused:[/red] {refusal}")
        raise typer.Exit(2) from None
    _print(answer)
    console.print(f"wrote {out / 'calibration.json'} and {out / 'calibration.png'}")


def main() -> None:
    typer.run(command)

