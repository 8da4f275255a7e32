from django.urls import URLPattern, URLResolver

app_name = "schedules_web"
urlpatterns: list[URLPattern | URLResolver] = []
