"""Bodies of the operator routes (`/api/v1/admin/...`, admin key when auth is on), which
`face-ops` calls while the service runs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from serve_app.backup import Manifest
from serve_app.schemas import ID_PATTERN, FaceInfo, IdentityRef, ImageB64

# A prefix of an identity id: the same charset, and it may be empty (= every identity).
IdPrefix = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@-]*$", max_length=128)]
BackupName = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=128)]
CollectionName = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=128)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CollectionView(BaseModel):
    name: str
    exists: bool
    expected_dim: int
    points: int | None = None
    dim: int | None = None
    distance: str | None = None
    indexes: dict[str, str] = Field(default_factory=dict, description="Payload index -> type")
    missing_indexes: list[str] = Field(description="Indexes the service needs that the collection lacks")
    model: dict[str, Any] | None = Field(None, description="The recognizer that wrote the vectors")


class CollectionsResponse(BaseModel):
    engine: str
    model: dict[str, Any] = Field(description="The recognizer this service embeds with")
    collections: list[CollectionView]


class IdentityDetail(BaseModel):
    point_id: str
    template: dict[str, Any] = Field(description="The template's payload")
    enrollment_faces: list[dict[str, Any]]
    gallery_faces_tagged: int
    template_vector: list[float] | None = None


class SimilarityRequest(_Body):
    image_b64: ImageB64
    hi_threshold: float | None = Field(None, ge=0.0, le=1.0)


class PhotoSimilarity(BaseModel):
    point_id: str
    image_index: int | None = None
    similarity: float


class ProbeFace(FaceInfo):
    faces_in_image: int
    image: dict[str, int]


class SimilarityExplanation(BaseModel):
    identity: IdentityRef
    probe_face: ProbeFace
    similarity: float = Field(description="(1 + cosine) / 2 to the template: what /verify decides on")
    threshold: float
    margin: float = Field(description="similarity - threshold")
    verified: bool
    enrollment_photos: list[PhotoSimilarity]
    enrollment_consistency: float | None = None
    reason: str


class CleanupRequest(_Body):
    prefix: IdPrefix = Field("", description="Only identity ids starting with this; empty = all")
    apply: bool = Field(False, description="Remove; otherwise count only (dry run)")


class BackupRequest(_Body):
    name: BackupName | None = Field(None, description="Folder name under BACKUP_DIR (default backup-<UTC time>)")
    collections: list[CollectionName] | None = Field(None, description="Default: both")


class BackupResponse(BaseModel):
    path: str = Field(description="The backup folder on the FaceStore's host")
    manifest: Manifest
