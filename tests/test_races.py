"""Erasure and de-duplication under concurrency, with one and with two "replicas".

Production runs 2-4 FaceStore replicas in different processes over one Qdrant server, so
nothing held in a process may order an identity's writes. Here two `FaceRepository`
objects share ONE store, each behind its own `Gate`, standing in for two replicas:
- "server": qdrant-client's local mode (`QdrantClient(":memory:")`), the client code path
  of a real server. Local mode is plain Python without locks, so the gates apply one
  request at a time to it, as a server does; nothing orders a *sequence* of requests.
- "edge": one embedded Qdrant Edge store shared by both repositories in one process.

A `Gate` can stop its replica at a chosen store call until the test lets it go, which
forces the orderings that used to lose an erasure (a DELETE between an enrollment's
template and its re-tag, an ingest between another's duplicate check and write) every
time, not once in a while. The hammer tests then run many rounds of concurrent clients
with random delays between store calls.
"""

from __future__ import annotations

import asyncio
import os
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from serve_app.config import Settings
from serve_app.embedding import EmbedResult, Face
from serve_app.errors import NotFound
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import ingest as ingest_flow
from serve_app.flows import search as search_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import Ports, ThreadedRepository
from serve_app.repository import ErasedIdentity, FaceRepository
from serve_app.vectordb.base import CollectionInfo, CollectionSpec, Filter, Hit, Record, VectorStore
from serve_app.vectordb.edge import EdgeStore
from serve_app.vectordb.server import QdrantServerStore
from tests.fakes import DIM, GOOD_QUALITY, FakeEmbedder, direction

TENANT = "t1"
WAIT_S = 20.0


# --- the shared store and the gates in front of it ----------------------------------------

@dataclass
class Pause:
    """Stop the replica at one store call (before or after it runs) until released."""

    method: str
    collection: str
    after: bool
    match: Callable[[tuple[Any, ...], dict[str, Any]], bool]
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    armed: bool = True

    def wait_reached(self) -> None:
        assert self.reached.wait(WAIT_S), f"the replica never reached {self.method} on {self.collection}"


class Gate(VectorStore):
    """One replica's view of the shared store: pauses on request, jitter on request."""

    def __init__(self, shared: VectorStore, one_request_at_a_time: threading.Lock | None, jitter_s: float = 0.0,
                 seed: int = 0) -> None:
        self.shared = shared
        self.engine = shared.engine
        self._server = one_request_at_a_time
        self.jitter_s = jitter_s
        self._random = random.Random(seed)
        self._pauses: list[Pause] = []
        self._lock = threading.Lock()

    def pause(self, method: str, collection: str, *, after: bool = False,
              match: Callable[[tuple[Any, ...], dict[str, Any]], bool] = lambda args, kwargs: True) -> Pause:
        point = Pause(method, collection, after, match)
        self._pauses.append(point)
        return point

    def release_all(self) -> None:
        """Let every paused client go (teardown after a failed assertion)."""
        for point in self._pauses:
            point.armed = False
            point.release.set()

    def _stop(self, method: str, collection: str, after: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            hit = next((p for p in self._pauses if p.armed and p.method == method and p.collection == collection
                        and p.after == after and p.match(args, kwargs)), None)
            if hit is not None:
                hit.armed = False
        if hit is not None:
            hit.reached.set()
            assert hit.release.wait(WAIT_S), "the test never released a paused replica"

    def _call(self, method: str, collection: str, *args: Any, **kwargs: Any) -> Any:
        if self.jitter_s:
            with self._lock:
                delay = self._random.random() * self.jitter_s
            time.sleep(delay)
        self._stop(method, collection, False, args, kwargs)
        if self._server is None:
            result = getattr(self.shared, method)(collection, *args, **kwargs)
        else:
            with self._server:
                result = getattr(self.shared, method)(collection, *args, **kwargs)
        self._stop(method, collection, True, args, kwargs)
        return result

    def ensure_collection(self, spec: CollectionSpec) -> None:
        if self._server is None:
            self.shared.ensure_collection(spec)
        else:
            with self._server:
                self.shared.ensure_collection(spec)

    def describe(self, collection: str) -> CollectionInfo:
        return self._call("describe", collection)  # type: ignore[no-any-return]

    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        self._call("upsert", collection, records, only_new)

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        return self._call("retrieve", collection, ids, with_vectors)  # type: ignore[no-any-return]

    def search(self, collection: str, vector: np.ndarray, where: Filter, limit: int,
               hnsw_ef: int | None = None, score_threshold: float | None = None) -> list[Hit]:
        return self._call("search", collection, vector, where, limit,  # type: ignore[no-any-return]
                          hnsw_ef=hnsw_ef, score_threshold=score_threshold)

    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        return self._call("scroll", collection, where, with_vectors, page_size)  # type: ignore[no-any-return]

    def count(self, collection: str, where: Filter) -> int:
        return self._call("count", collection, where)  # type: ignore[no-any-return]

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any], *args: Any,
                    **kwargs: Any) -> None:
        self._call("set_payload", collection, ids, payload, *args, **kwargs)

    def delete_payload_keys(self, collection: str, ids: Sequence[str], keys: Sequence[str], *args: Any,
                            **kwargs: Any) -> None:
        self._call("delete_payload_keys", collection, ids, keys, *args, **kwargs)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._call("delete", collection, ids)

    def delete_where(self, collection: str, where: Filter) -> None:
        self._call("delete_where", collection, where)

    def collection_metadata(self, collection: str) -> dict[str, Any]:
        return self._call("collection_metadata", collection)  # type: ignore[no-any-return]

    def update_collection_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        self._call("update_collection_metadata", collection, metadata)

    # Backups are not raced here: passed straight to the shared engine.
    def exists(self, collection: str) -> bool:
        return self.shared.exists(collection)

    def snapshot(self, collections: Sequence[str], dest: Path) -> dict[str, str]:
        return self.shared.snapshot(collections, dest)

    def restore(self, collection: str, source: Path) -> None:
        self.shared.restore(collection, source)


# --- fixtures ---------------------------------------------------------------------------

@dataclass
class Replica:
    gate: Gate
    repository: FaceRepository
    ports: Ports


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, vector_dim=DIM)


@dataclass
class Shared:
    """The one store behind every replica; `lock` stands for a server applying one request
    at a time (qdrant-client's local mode is plain Python without locks of its own; Edge
    serialises its writes itself). Nothing orders a *sequence* of requests."""

    store: VectorStore
    lock: threading.Lock | None


@pytest.fixture(params=["edge", "server"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shared]:
    if request.param == "edge":
        store: VectorStore = EdgeStore(tmp_path / "edge")
        yield Shared(store, None)
    else:
        store = QdrantServerStore(QdrantClient(":memory:"))
        yield Shared(store, threading.Lock())
    store.close()


def replica(shared: Shared, settings: Settings, jitter_s: float = 0.0, seed: int = 0) -> Replica:
    gate = Gate(shared.store, shared.lock, jitter_s, seed)
    repository = FaceRepository.for_settings(gate, settings)
    repository.ensure_all()
    return Replica(gate, repository, Ports(FakeEmbedder(), ThreadedRepository(repository), settings))


@pytest.fixture
def replicas(shared: Shared, settings: Settings) -> Iterator[tuple[Replica, Replica]]:
    nodes = replica(shared, settings, seed=1), replica(shared, settings, seed=2)
    yield nodes
    for node in nodes:
        node.gate.release_all()


# --- helpers ----------------------------------------------------------------------------

def photos(name: str, variants: Sequence[int]) -> list[bytes]:
    return [f"{name}/{variant}".encode() for variant in variants]


def enroll(node: Replica, identity: str, variants: Sequence[int] = (1, 2, 3)) -> dict[str, Any]:
    answer = asyncio.run(enroll_flow.enroll_identity(node.ports, TENANT, identity, photos(identity, variants)))
    return answer.model_dump(mode="json")


def ingest_gallery(node: Replica, name: str, image_id: str) -> dict[str, Any]:
    """A crawled photo whose one face is `name`'s (a fresh variant, so not a duplicate)."""
    face = Face((5.0, 5.0, 60.0, 70.0), 0.9, direction(name), GOOD_QUALITY)
    p_hash = f"{random.Random(image_id).getrandbits(64):016x}"
    embedded = EmbedResult(faces=[face], width=100, height=100, p_hash=p_hash)
    return store_copy(node, image_id, embedded)


def delete(node: Replica, identity: str) -> ErasedIdentity | None:
    return node.repository.delete_identity(TENANT, identity)


def carriers(node: Replica, identity: str) -> list[Record]:
    """Every stored face that names the identity, whatever a reader would show."""
    return node.gate.scroll(node.repository.faces, {"tenant_id": TENANT, "identity_id": identity})


def search_names(node: Replica, probe: bytes) -> set[str | None]:
    answer = asyncio.run(search_flow.search(node.ports, TENANT, probe, 50))
    return {hit.identity_id for hit in answer.hits}


def assert_erased(node: Replica, identity: str) -> None:
    assert carriers(node, identity) == []
    assert node.repository.get_identity(TENANT, identity) is None
    assert identity not in search_names(node, f"{identity}/9".encode())
    with pytest.raises(NotFound, match="identity_not_enrolled"):
        asyncio.run(verify_flow.verify(node.ports, TENANT, identity, f"{identity}/9".encode()))
    assert delete(node, identity) is None  # a second DELETE answers 404


def is_retag_search(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """The re-tag's candidate search: over ingested faces only."""
    return isinstance(args[1], Mapping) and args[1].get("source") == "ingest"


def in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(target())
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            box.append(error)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def joined(thread: threading.Thread, box: list[Any]) -> Any:
    thread.join(WAIT_S)
    assert not thread.is_alive() and box, "the client thread did not finish"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


# --- erasure: forced interleavings ----------------------------------------------------------

def test_delete_between_template_and_retag_wins(replicas) -> None:
    """The finding: DELETE answered 200 between save and re-tag, then the re-tag tagged
    gallery faces with the erased id; search kept returning them; a second DELETE was 404."""
    one, two = replicas
    gallery = ingest_gallery(two, "alice", "crawl-1")
    assert gallery["status"] == "ingested"
    before_retag = one.gate.pause("search", one.repository.faces, match=is_retag_search)
    thread, box = in_thread(lambda: enroll(one, "alice"))
    before_retag.wait_reached()

    assert delete(two, "alice") is not None  # 200: the template was there
    after_tag = one.gate.pause("set_payload", one.repository.faces, after=True)
    before_retag.release.set()
    # The re-tag has now written its tag and not yet checked it: readers must not show it.
    if after_tag.reached.wait(5):
        assert "alice" not in search_names(two, b"alice/9")
        assert delete(two, "alice") is None
        after_tag.release.set()
    joined(thread, box)
    assert_erased(two, "alice")


def test_delete_while_ingest_tags_a_face_wins(replicas) -> None:
    """An ingest matched alice, then DELETE erased her before the ingest wrote its faces."""
    one, two = replicas
    enroll(two, "alice")
    before_write = one.gate.pause("upsert", one.repository.faces)
    thread, box = in_thread(lambda: ingest_gallery(one, "alice", "crawl-2"))
    before_write.wait_reached()
    assert delete(two, "alice") is not None
    before_write.release.set()
    answer = joined(thread, box)
    assert answer["status"] == "ingested"
    assert [face["identity_id"] for face in answer["faces"]] == [None]  # the answer does not name her
    assert_erased(two, "alice")


def test_reenrollment_race_leaves_one_generation(replicas) -> None:
    """Two replicas re-enroll one identity with different photo sets, one overtaking the
    other between its writes: template and enrollment photos must come from one enrollment."""
    one, two = replicas
    enroll(one, "alice", (1, 2))
    first_write = one.gate.pause("upsert", one.repository.faces)
    thread, box = in_thread(lambda: enroll(one, "alice", (3, 4, 5)))
    first_write.wait_reached()
    enroll(two, "alice", (6, 7, 8, 9))
    first_write.release.set()
    joined(thread, box)

    identity = two.repository.get_identity(TENANT, "alice")
    assert identity is not None
    enrolled = [r for r in carriers(two, "alice") if r.payload["source"] == "enrollment"]
    assert len(enrolled) == identity.payload["images"]
    # The template is the mean of exactly the stored enrollment photos.
    vectors = two.gate.retrieve(two.repository.faces, [r.id for r in enrolled], with_vectors=True)
    mean = np.mean([v.vector / np.linalg.norm(v.vector) for v in vectors], axis=0)
    assert float(identity.template @ mean / np.linalg.norm(identity.template) / np.linalg.norm(mean)) > 0.9999


# --- de-duplication: forced interleavings ---------------------------------------------------

BASE_HASH = 0x9F3A_5C71_E0B2_4D86


def near_copy(flipped_bits: Sequence[int], name: str = "crowd", base: int = BASE_HASH) -> EmbedResult:
    """The embedding of a re-encoded copy of one photo: same faces, a few hash bits off."""
    p_hash = base
    for bit in flipped_bits:
        p_hash ^= 1 << bit
    faces = [Face((10.0 * i, 5.0, 10.0 * i + 40, 60.0), 0.9, direction(f"{name}-{i}"), GOOD_QUALITY) for i in range(3)]
    return EmbedResult(faces=faces, width=200, height=100, p_hash=f"{p_hash:016x}")


def store_copy(node: Replica, image_id: str, embedded: EmbedResult) -> dict[str, Any]:
    answer = asyncio.run(ingest_flow.store_embedded_image(node.ports, TENANT, "site", image_id, embedded))
    return answer.model_dump(mode="json")


def stored_images(node: Replica) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in node.gate.scroll(node.repository.faces, {"tenant_id": TENANT, "source": "ingest"}):
        counts[record.payload["image_id"]] = counts.get(record.payload["image_id"], 0) + 1
    return counts


def test_ingest_between_duplicate_check_and_write_is_caught(replicas) -> None:
    """Replica one checked for duplicates, found none, and stalled; replica two stored a
    near copy meanwhile. Only one of the two may stay, the other answers `duplicate`."""
    one, two = replicas
    after_check = one.gate.pause("scroll", one.repository.faces, after=True)
    thread, box = in_thread(lambda: store_copy(one, "img-b", near_copy([3])))
    after_check.wait_reached()
    second = store_copy(two, "img-a", near_copy([17, 40]))
    after_check.release.set()
    first = joined(thread, box)

    assert sorted([first["status"], second["status"]]) == ["duplicate", "ingested"]
    kept = stored_images(one)
    assert len(kept) == 1 and kept == {next(a["image_id"] for a in (first, second)
                                             if a["status"] == "ingested"): 3}
    loser = first if first["status"] == "duplicate" else second
    assert loser["duplicate_of"]["image_id"] in kept


def test_two_writes_before_either_recheck_keep_one(replicas) -> None:
    """Both replicas found no duplicate and both wrote their copy before either looked again."""
    one, two = replicas
    checked = [node.gate.pause("scroll", node.repository.faces, after=True) for node in (one, two)]
    jobs = ((one, "img-x", [1]), (two, "img-y", [2, 9]))
    threads = [in_thread(lambda job=job: store_copy(job[0], job[1], near_copy(job[2]))) for job in jobs]
    for point in checked:
        point.wait_reached()
    rechecks = [node.gate.pause("scroll", node.repository.faces) for node in (one, two)]
    for point in checked:
        point.release.set()
    if all(point.reached.wait(5) for point in rechecks):  # (the code before this fix never looked again)
        assert stored_images(one).keys() == {"img-x", "img-y"}
    for point in rechecks:
        point.release.set()
    answers = [joined(*thread) for thread in threads]
    assert sorted(answer["status"] for answer in answers) == ["duplicate", "ingested"]
    assert len(stored_images(one)) == 1


def test_a_retry_racing_its_first_upload_cannot_undo_it(replicas) -> None:
    """The same bytes sent twice at once, to two replicas: the retry's write comes after the
    first upload settled as stored and must not send it back to pending (which made the
    first upload think it had lost and remove the only copy)."""
    one, two = replicas
    embedded = near_copy([5])
    retry_checked = two.gate.pause("scroll", two.repository.faces, after=True)
    retry, retry_box = in_thread(lambda: store_copy(two, "img-same", embedded))
    retry_checked.wait_reached()
    settled = one.gate.pause("set_payload", one.repository.faces, after=True,
                             match=lambda args, kwargs: args[1].get("dedup") == "stored")
    first, first_box = in_thread(lambda: store_copy(one, "img-same", embedded))
    settled.wait_reached()
    retry_rechecks = two.gate.pause("scroll", two.repository.faces)
    retry_checked.release.set()
    retry_rechecks.wait_reached()  # the retry has written its copy of the same points
    settled.release.set()
    first_answer = joined(first, first_box)
    retry_rechecks.release.set()
    answers = [first_answer, joined(retry, retry_box)]
    assert [answer["status"] for answer in answers] == ["ingested", "ingested"]
    assert stored_images(one) == {"img-same": 3}


# --- hammers: many rounds of concurrent clients, random delays between store calls ------------

# More rounds for a soak: RACE_ROUNDS=200 pytest tests/test_races.py -k hammer
ROUNDS = int(os.environ.get("RACE_ROUNDS", "12"))


Job = tuple[str, Replica, float, tuple[int, ...]]  # action, replica, delay before it, photo variants


def client(job: Job, name: str) -> Any:
    action, node, delay, variants = job
    time.sleep(delay)
    if action == "enroll":
        return enroll(node, name, variants)
    if action == "delete":
        return delete(node, name)
    return search_names(node, f"{name}/9".encode())


@pytest.mark.parametrize("replica_count", [1, 2])
def test_erasure_hammer(shared, settings, replica_count: int) -> None:
    """Per round: gallery faces of alice, then concurrently: re-enrollments, a DELETE,
    searches. At quiescence alice is either erased everywhere or enrolled once, consistently;
    after an erasure nothing names her and a second DELETE is 404."""
    nodes = [replica(shared, settings, jitter_s=0.002, seed=seed) for seed in range(replica_count)]
    repository = nodes[0].repository
    outcomes = {"erased": 0, "re-enrolled": 0}
    for round_no in range(ROUNDS):
        name = f"alice{round_no}"
        ingest_gallery(nodes[0], name, f"crawl-{round_no}")
        enroll(nodes[-1], name, (1, 2))
        delay = random.Random(round_no).random() * 0.012
        # The DELETE starts a little later, at a random moment of the enrollments.
        jobs: list[Job] = [("enroll", nodes[0], 0.0, (3, 4, 5)), ("enroll", nodes[-1], 0.0, (6, 7)),
                           ("delete", nodes[-1], delay, ()), ("search", nodes[0], 0.0, ())]
        with ThreadPoolExecutor(len(jobs)) as pool:
            list(pool.map(functools.partial(client, name=name), jobs))

        identity = repository.get_identity(TENANT, name)
        named = carriers(nodes[0], name)
        if identity is None:
            outcomes["erased"] += 1
            assert named == [], f"round {round_no}: faces still carry an erased identity"
        else:
            outcomes["re-enrolled"] += 1
            enrolled = [r for r in named if r.payload["source"] == "enrollment"]
            assert len(enrolled) == identity.payload["images"], f"round {round_no}: photos of two enrollments"
            assert {r.payload.get("identity_gen") for r in named} == {identity.payload.get("generation")}
            assert delete(nodes[0], name) is not None
        assert_erased(nodes[-1], name)
    print(f"erasure hammer, {replica_count} replica(s): {ROUNDS} rounds, {outcomes}")


@pytest.mark.parametrize("replica_count", [1, 2])
def test_dedup_hammer(shared, settings, replica_count: int) -> None:
    """Per round: five near copies of one photo (and a retry of one of them) ingested at
    once. Exactly one copy stays; every other answer is `duplicate` or `already_ingested`."""
    nodes = [replica(shared, settings, jitter_s=0.002, seed=10 + seed) for seed in range(replica_count)]
    for round_no in range(ROUNDS):
        rng = random.Random(round_no)
        base = rng.getrandbits(64)  # another photo each round
        copies = [(f"r{round_no}-c{i}", near_copy(rng.sample(range(64), 2), f"g{round_no}", base)) for i in range(5)]
        # The last one: the same bytes again (a client retry), on the other replica.
        jobs = [(nodes[i % len(nodes)], image, embedded) for i, (image, embedded) in enumerate([*copies, copies[0]])]
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda job: store_copy(*job), jobs))
        kept = {image: n for image, n in stored_images(nodes[0]).items() if image.startswith(f"r{round_no}-")}
        assert len(kept) == 1 and list(kept.values()) == [3], f"round {round_no}: {kept}"
        statuses = sorted(answer["status"] for answer in answers)
        assert set(statuses) <= {"ingested", "duplicate", "already_ingested"}
        assert statuses.count("duplicate") >= 4, f"round {round_no}: {statuses}"
    print(f"dedup hammer, {replica_count} replica(s): {ROUNDS} rounds of 6 concurrent ingests")
