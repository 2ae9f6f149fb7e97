from rest_framework import serializers

from gdpr.models import DataSubjectRequest, RequestStatus


class ErasureOutput(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.CharField()
    # A plain string in the schema: an enum here would collide with billing's "status" enums by name.
    status = serializers.CharField(help_text="One of: " + ", ".join(RequestStatus.values))
    created_at = serializers.DateTimeField()
    completed_at = serializers.DateTimeField(allow_null=True)


class ExportOutput(ErasureOutput):
    expires_at = serializers.DateTimeField(allow_null=True, help_text="The download works until then")
    download_url = serializers.SerializerMethodField(help_text="Set once the archive can be downloaded")

    def get_download_url(self, data_request: DataSubjectRequest) -> str | None:
        if data_request.status != RequestStatus.COMPLETED:
            return None
        return f"/api/v1/gdpr/exports/{data_request.id}/download"
