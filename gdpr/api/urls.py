from django.urls import path

from gdpr.api import views

urlpatterns = [
    path("gdpr/exports", views.ExportCreateApi.as_view(), name="gdpr-exports"),
    path("gdpr/exports/<uuid:request_id>", views.ExportDetailApi.as_view(), name="gdpr-export"),
    path("gdpr/exports/<uuid:request_id>/download", views.ExportDownloadApi.as_view(), name="gdpr-export-download"),
    path("gdpr/erasure", views.ErasureCreateApi.as_view(), name="gdpr-erasures"),
    path("gdpr/erasure/<uuid:request_id>", views.ErasureDetailApi.as_view(), name="gdpr-erasure"),
]
