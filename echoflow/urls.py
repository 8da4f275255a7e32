from django.contrib import admin
from django.urls import include, path

from echoflow.views import healthz, metrics

admin.site.site_header = "EchoFlow"
admin.site.site_title = "EchoFlow"
admin.site.index_title = "Schedules, runs and the system tasks behind them"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("api/", include("echoflow.api.urls")),
    path("schedules/", include("schedules.web.urls")),
]
