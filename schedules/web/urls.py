from django.urls import URLPattern, URLResolver, path

from schedules.web import action_views, editor_views, run_views, views

app_name = "schedules_web"
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.LogoutView.as_view(), name="logout"),
    path("tiles/", views.tiles, name="tiles"),
    path("new/", editor_views.schedule_new, name="schedule_create"),
    path("new/validate/", editor_views.schedule_validate_new, name="schedule_validate_new"),
    path("<int:pk>/edit/", editor_views.schedule_edit, name="schedule_edit"),
    path("<int:pk>/validate/", editor_views.schedule_validate, name="schedule_validate"),
    path("<int:pk>/disable/", action_views.schedule_disable, name="schedule_disable"),
    path("<int:pk>/enable/", action_views.schedule_enable, name="schedule_enable"),
    path("<int:pk>/run-now/", action_views.schedule_run_now, name="schedule_run_now"),
    path("<int:pk>/delete/", action_views.schedule_delete, name="schedule_delete"),
    path("<int:pk>/runs/", run_views.schedule_runs, name="schedule_runs"),
    path("runs/one-off/", run_views.adhoc_runs, name="adhoc_runs"),
    path("runs/<int:pk>/retry/", run_views.run_retry, name="run_retry"),
    path("runs/<int:pk>/cancel/", run_views.run_cancel, name="run_cancel"),
]
