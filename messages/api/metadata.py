"""OPTIONS answers: the view's name and formats; /api/schema/ documents the inputs.

(DRF's default describes the view's serializer_class, which these explicit-serializer views do
not have.) Imports nothing of DRF's views: DRF loads this class while defining APIView.
"""

from __future__ import annotations

from typing import Any

from rest_framework.metadata import SimpleMetadata


class ApiMetadata(SimpleMetadata):
    def determine_metadata(self, request: Any, view: Any) -> dict[str, Any]:
        metadata = super().determine_metadata(request, view)
        metadata.pop("actions", None)
        return metadata

    def determine_actions(self, request: Any, view: Any) -> dict[str, Any]:
        return {}
