"""Bodies of the API key routes: a key asked for, a key shown (never its secret but once)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
)

from services.api.schemas.documents import (
    OptionalText,
    Text,
)

Scope = Literal["submit", "tasks", "admin"]


Origin = Annotated[str, Field(max_length=500, pattern=r"^(\*|https?://[^/\s]+)$")]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "org_id": "org_123",
                    "scopes": ["submit"],
                    "name": "contact form",
                    "allowed_origins": ["https://www.example.com"],
                },
            ]
        }
    )

    org_id: Text
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    name: OptionalText = None
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        max_length=50,
        description="web origins a `submit` key may be used from (none: any)",
    )


class ApiKeyOut(BaseModel):
    id: UUID
    org_id: str
    name: str | None
    scopes: list[str]
    allowed_origins: list[str]
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyMade(ApiKeyOut):
    key: str = Field(description="the key itself: shown in this answer only")
