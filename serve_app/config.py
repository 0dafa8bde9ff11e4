"""Runtime configuration, read from the environment (names from the deployment plan).

Every deployment replica builds its own `Settings()`; Ray workers inherit the
environment of the process that started Ray, and `serve_config.yaml` may add more
through `runtime_env.env_vars`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serve_app.dedup import MAX_SUPPORTED_DISTANCE

SERVICE_NAME = "face-pipeline-search-api"

# Decode budget and face cap defaults (also the defaults of the plain-Python APIs).
DEFAULT_MAX_JPEG_SCANS = 100
DEFAULT_MAX_DECODE_SECONDS = 5.0
DEFAULT_MAX_FACES_PER_IMAGE = 100


class Settings(BaseSettings):
    # Empty values (as in a copied env.example) mean "use the default".
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True, env_ignore_empty=True)

    # --- store -----------------------------------------------------------------
    qdrant_url: str | None = Field(None, description="Qdrant server URL; unset = embedded Qdrant Edge")
    qdrant_api_key: str | None = None
    qdrant_path: Path = Field(Path("data/qdrant"), description="Embedded store directory")
    qdrant_timeout_s: float = 10.0
    # The gallery collection; the plan names its variable QDRANT_COLLECTION.
    faces_collection: str = Field("faces_v1", validation_alias=AliasChoices("qdrant_collection",
                                                                            "faces_collection"))
    identity_collection: str = "identities_v1"
    vector_dim: int = 512
    # Embedded store only (a Qdrant server indexes itself): the HNSW index and int8
    # vectors built in the background once this many points are unindexed and writes have
    # paused for EDGE_INDEX_QUIET_S (serve_app.vectordb.index_upkeep; 0 = never).
    edge_index_min_new_points: int = Field(20_000, ge=0)
    edge_index_quiet_s: float = Field(60.0, ge=0.0)
    edge_hnsw_m: int = Field(16, ge=4)
    edge_hnsw_ef_construct: int = Field(100, ge=4)
    edge_int8: bool = True
    # Where POST /api/v1/admin/backup writes (on the FaceStore's host); unset = a
    # `backups` folder beside QDRANT_PATH.
    backup_dir: Path | None = None

    # --- verification-first flow --------------------------------------------------
    enable_verification_flow: bool = True
    verify_hi_threshold: float = Field(0.78, ge=0.0, le=1.0)
    # A request may raise the threshold, never lower it below this floor.
    verify_threshold_floor: float = Field(0.75, ge=0.0, le=1.0)
    verify_top_k: int = Field(50, ge=1, le=1000)
    verify_hnsw_ef: int = Field(128, ge=1)
    # Enrollment photos must agree with each other at least this much ((1+cos)/2 scale).
    # Same person: cosine >= ~0.45 on public pairs; different people: <= ~0.33.
    enroll_min_similarity: float = Field(0.70, ge=0.0, le=1.0)
    search_max_top_k: int = Field(100, ge=1)

    # --- gallery ingestion ----------------------------------------------------------
    # Images whose 64-bit perceptual hashes differ in at most this many bits are copies.
    # At most 7: the banded candidate lookup (serve_app.dedup) is exact up to there.
    dedup_max_distance: int = Field(6, ge=0, le=MAX_SUPPORTED_DISTANCE)
    # How many gallery faces one (re-)enrollment may tag at most.
    retag_max_faces: int = Field(10_000, ge=1)
    max_metadata_fields: int = Field(32, ge=0)

    # --- models ---------------------------------------------------------------------
    face_model_dir: Path | None = Field(None, description="Directory of another model pack")
    face_detector_file: str | None = None
    face_recognizer_file: str | None = None
    face_device: str = Field("auto", pattern="^(auto|cpu|cuda)$")
    det_size: int = Field(640, ge=160, le=1280, multiple_of=32)
    det_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_face_size: int = Field(20, ge=1, description="Smallest face side in pixels")
    ort_intra_op_threads: int = Field(0, ge=0, description="0 = onnxruntime default")

    # --- face quality gate (serve_app.quality; README "Quality gate" says how the defaults
    # were measured) ------------------------------------------------------------------
    # Enrollment refuses a photo whose face is outside any limit; verify and search report
    # the same measures and refuse only when quality_gate_probes is set.
    quality_gate_enrollment: bool = True
    quality_gate_probes: bool = False
    quality_min_face_size: float = Field(32.0, ge=0.0, description="Shorter side of the face box, pixels")
    quality_min_det_score: float = Field(0.6, ge=0.0, le=1.0)
    quality_min_sharpness: float = Field(30.0, ge=0.0, description="Variance of the Laplacian of the face crop")
    quality_min_brightness: float = Field(50.0, ge=0.0, le=255.0)
    quality_max_brightness: float = Field(210.0, ge=0.0, le=255.0)
    quality_max_clipped: float = Field(0.10, ge=0.0, le=1.0, description="Fraction of face pixels at black or white")
    quality_max_yaw: float = Field(30.0, ge=0.0, le=90.0, description="Degrees")
    quality_max_pitch: float = Field(40.0, ge=0.0, le=90.0, description="Degrees")

    # --- auth -----------------------------------------------------------------------
    # Off for local development (a loud warning at start); configs/production.yaml turns it on.
    auth_enabled: bool = False
    api_keys_file: Path | None = Field(None, description="JSON file of hashed keys, re-read on change")
    api_keys: str | None = Field(None, description="tenant_id:sha256 or admin:sha256, comma-separated")

    # --- input limits -----------------------------------------------------------------
    max_request_bytes: int = Field(40 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    # Decode budget: progressive JPEG scans (each costs a pass over every coefficient) and
    # the wall time one image's decoder may take, whatever the file's structure.
    max_jpeg_scans: int = Field(DEFAULT_MAX_JPEG_SCANS, ge=1)
    max_decode_seconds: float = Field(DEFAULT_MAX_DECODE_SECONDS, gt=0)
    # Gallery faces stored per image at most (the largest kept; the answer counts the rest).
    max_faces_per_image: int = Field(DEFAULT_MAX_FACES_PER_IMAGE, ge=1)
    # Probes' largest face found on a half-side canvas first (serve_app.coarse_to_fine).
    # Off: it saves a fifth of a small probe's model time, but moves some photos' verify
    # similarity by more than the 0.01 that scaled decoding keeps to (README "Configuration").
    coarse_to_fine: bool = False
    max_enroll_images: int = Field(10, ge=1)
    # Requests per second per API key (token bucket per Gateway replica; 0 = no limit) and
    # the burst a key may send at once. Applies when AUTH_ENABLED: keys name the callers.
    rate_limit_per_s: float = Field(0.0, ge=0.0)
    rate_limit_burst: int = Field(20, ge=1)

    @model_validator(mode="after")
    def _floor_below_default(self) -> "Settings":
        if self.verify_threshold_floor > self.verify_hi_threshold:
            raise ValueError("VERIFY_THRESHOLD_FLOOR must not exceed VERIFY_HI_THRESHOLD")
        if self.quality_min_brightness > self.quality_max_brightness:
            raise ValueError("QUALITY_MIN_BRIGHTNESS must not exceed QUALITY_MAX_BRIGHTNESS")
        return self

    @classmethod
    def env_names(cls) -> set[str]:
        """Every environment variable the service reads (the first alias of a renamed field)."""
        names = set()
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            names.add((alias.choices[0] if isinstance(alias, AliasChoices) else name).upper())  # type: ignore[union-attr]
        return names

    @property
    def embedded_store(self) -> bool:
        return not self.qdrant_url

    @property
    def backups_path(self) -> Path:
        return Path(self.backup_dir) if self.backup_dir else Path(self.qdrant_path).parent / "backups"
