"""HTTP request and response bodies (the deployment plan's shapes)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Ids go into payloads, logs and point-id derivation: a conservative charset, bounded.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
TenantId = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=64)]
IdentityId = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=128)]
ImageB64 = Annotated[str, Field(description="data:image/...;base64,... URI or bare base64 (JPEG, PNG, WebP, BMP)")]


class _Body(BaseModel):
    # Unknown fields are refused: a typo such as "image_b64" for "images_b64" must not
    # silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class EnrollRequest(_Body):
    tenant_id: TenantId | None = Field(None, description="May come from the X-Tenant-ID header instead")
    identity_id: IdentityId
    images_b64: list[ImageB64] = Field(description="Several photos of the person (e.g. frontal, left, right)")


class VerifyRequest(_Body):
    tenant_id: TenantId | None = None
    identity_id: IdentityId
    image_b64: ImageB64
    hi_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                       description="May raise the server threshold, not lower it below the floor")


class SearchRequest(_Body):
    tenant_id: TenantId | None = None
    image_b64: ImageB64
    top_k: int = Field(10, description="1..SEARCH_MAX_TOP_K")


SiteId = Annotated[str, StringConstraints(pattern=ID_PATTERN, min_length=1, max_length=128)]
# Finite numbers only: JSON parsers accept NaN and Infinity, the store does not.
MetadataValue = Annotated[str, StringConstraints(max_length=1024)] | int | Annotated[
    float, Field(allow_inf_nan=False)] | bool | None


class IngestRequest(_Body):
    tenant_id: TenantId | None = None
    site: SiteId = Field(description="Where the image was crawled from (indexed)")
    image_b64: ImageB64
    url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(None, description="Source URL")
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], MetadataValue] = Field(
        default_factory=dict, description="Client metadata stored with each face (flat, bounded)")


class IdentityRef(BaseModel):
    tenant_id: str
    identity_id: str


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class QualityInfo(BaseModel):
    """The face's quality measures (serve_app.quality; limits: the QUALITY_* settings)."""

    face_size: float = Field(description="Shorter side of the face box, pixels")
    det_score: float
    sharpness: float = Field(description="Variance of the Laplacian of the aligned face")
    brightness: float = Field(description="Mean luminance of the aligned face, 0-255")
    clipped: float = Field(description="Fraction of the face's pixels at black or white")
    yaw: float = Field(description="Degrees, + = turned towards the image's right")
    pitch: float = Field(description="Degrees, + = tilted down")


class FaceInfo(BaseModel):
    box: Box
    det_score: float
    quality: QualityInfo | None = None


class FaceHit(BaseModel):
    model_config = ConfigDict(extra="allow")

    face_id: str
    similarity: float = Field(description="(1 + cosine) / 2")
    identity_id: str | None = None


class EnrollResponse(BaseModel):
    ok: bool
    identity: IdentityRef
    vector_dim: int
    images_used: int
    consistency: float = Field(description="Lowest similarity between two enrollment photos")
    faces: list[FaceInfo]
    gallery_faces_tagged: int = Field(0, description="Ingested faces newly tagged with this identity")
    gallery_faces_untagged: int = Field(0, description="Faces no longer matching after re-enrollment")


class VerifyResponse(BaseModel):
    verified: bool
    similarity: float = Field(description="(1 + cosine) / 2 between probe and identity template")
    threshold: float
    identity: IdentityRef
    probe_face: FaceInfo
    results: list[FaceHit] = Field(description="Gallery faces of the identity, only when verified")
    count: int


class SearchQuery(BaseModel):
    tenant_id: str
    top_k: int
    face: FaceInfo


class SearchResponse(BaseModel):
    query: SearchQuery
    hits: list[FaceHit]
    count: int


class IngestedFace(BaseModel):
    face_id: str
    box: Box
    det_score: float
    identity_id: str | None = None
    similarity: float | None = Field(None, description="To the tagged identity's template")


class DuplicateOf(BaseModel):
    image_id: str
    url: str | None = None
    site: str | None = None
    distance: int = Field(description="Hamming distance between the 64-bit perceptual hashes")


class IngestStatus(str, Enum):
    INGESTED = "ingested"
    NO_FACES = "no_faces"
    DUPLICATE = "duplicate"  # a near copy of another stored image
    ALREADY_INGESTED = "already_ingested"  # the very same bytes again (a retry)


class IngestResponse(BaseModel):
    status: IngestStatus
    tenant_id: str
    image_id: str = Field(description="SHA-256 of the image bytes")
    p_hash: str
    face_ids: list[str]
    faces: list[IngestedFace]
    count: int
    duplicate_of: DuplicateOf | None = None
    small_faces_dropped: int = 0
    excess_faces_dropped: int = Field(0, description="Faces beyond MAX_FACES_PER_IMAGE (the smallest), not stored")


class DeletedIdentity(BaseModel):
    deleted: bool
    identity: IdentityRef
    enrollment_faces_deleted: int
    gallery_faces_untagged: int


class DeletedTenant(BaseModel):
    deleted: bool
    tenant_id: str
    identities_deleted: int
    faces_deleted: int


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: str
    service: str
    version: str
    components: dict[str, Any]


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    detail: str = Field(description="Stable snake_case error code")
