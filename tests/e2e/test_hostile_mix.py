"""Hostile requests mixed into normal traffic do not change the normal traffic's answers.

Normal verifications run from several clients, first alone, then while other clients send
crafted photos (an EXIF block that made Pillow raise, a progressive JPEG repeating one
scan a thousand times, a mosaic of many faces, bytes that are no image) to the same
endpoints. Every hostile request must get a 4xx (or, for the pixels that are fine, a
200), never a 5xx; every normal request must get its usual answer in both phases. The
figures (error rates and P95s of the normal traffic) are printed for the closing note.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from loadtests.launcher import ServeProcess
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri, encode_jpeg, read_package_image
from tests.hostile_images import crafted_exif_jpeg, scan_bomb_jpeg

TENANT = "hostile-mix"
NORMAL_CLIENTS = 3
NORMAL_REQUESTS = 45  # per phase, all clients together


def hostile_bodies() -> list[tuple[str, str, dict[str, object]]]:
    face = Image.fromarray(read_package_image("yaoming.jpg")[:, :, ::-1])
    players = read_package_image("players.jpg")
    mosaic = np.tile(players, (3, 3, 1))  # ~200 faces in one photo
    return [
        ("exif", "/api/v1/verify", {"identity_id": "person", "image_b64": data_uri(crafted_exif_jpeg(face))}),
        ("scan_bomb", "/api/v1/verify", {"identity_id": "person", "image_b64": data_uri(scan_bomb_jpeg(face, 3000))}),
        ("mosaic", "/api/v1/ingest", {"site": "mix", "image_b64": data_uri(encode_jpeg(mosaic, 80))}),
        ("garbage", "/api/v1/search", {"image_b64": data_uri(b"\xff\xd8\xff" + b"\x00" * 5000)}),
    ]


def normal_phase(client: httpx.Client, probe: str) -> tuple[int, list[float]]:
    """(wrong answers, latencies) of NORMAL_REQUESTS verifications of the enrolled person."""
    def one(_: int) -> tuple[bool, float]:
        started = time.perf_counter()
        response = client.post("/api/v1/verify", json={"tenant_id": TENANT, "identity_id": "person",
                                                       "image_b64": probe})
        right = response.status_code == 200 and response.json()["verified"] is True
        return right, time.perf_counter() - started

    with ThreadPoolExecutor(NORMAL_CLIENTS) as pool:
        results = list(pool.map(one, range(NORMAL_REQUESTS)))
    return sum(not right for right, _ in results), [seconds for _, seconds in results]


def p95_ms(latencies: list[float]) -> float:
    return round(statistics.quantiles(latencies, n=20)[-1] * 1000, 1)


def test_hostile_requests_do_not_change_normal_answers(serve_app: ServeProcess, client: httpx.Client,
                                                       samples) -> None:
    enrolled = client.post("/api/v1/enroll_identity", json={
        "tenant_id": TENANT, "identity_id": "person",
        "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS]})
    assert enrolled.status_code == 200, enrolled.text
    probe = data_uri(samples["probe_same_person"])
    baseline_errors, baseline = normal_phase(client, probe)

    hostile = hostile_bodies()
    answers: dict[str, list[int]] = {name: [] for name, _, _ in hostile}
    stop = threading.Event()

    def attack(offset: int) -> None:
        with httpx.Client(base_url=serve_app.url, timeout=120) as attacker:
            index = offset
            while not stop.is_set():
                name, path, body = hostile[index % len(hostile)]
                response = attacker.post(path, json={"tenant_id": TENANT, **body})
                answers[name].append(response.status_code)
                index += 1

    attackers = [threading.Thread(target=attack, args=(offset,)) for offset in range(2)]
    for thread in attackers:
        thread.start()
    try:
        mixed_errors, mixed = normal_phase(client, probe)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(180)

    print(f"\nnormal verify alone: {baseline_errors}/{NORMAL_REQUESTS} wrong, P95 {p95_ms(baseline)} ms; "
          f"beside hostile clients: {mixed_errors}/{NORMAL_REQUESTS} wrong, P95 {p95_ms(mixed)} ms; "
          f"hostile answers: { {name: sorted(set(codes)) for name, codes in answers.items()} }")
    assert baseline_errors == 0 and mixed_errors == 0
    for name, codes in answers.items():
        assert codes, f"no {name} request completed"
        assert all(code < 500 for code in codes), (name, codes)
    assert set(answers["scan_bomb"]) == {422}
    assert set(answers["garbage"]) <= {415, 422}
