"""Settings of the gunicorn scenario 5 (api) times: the project's own, with the comparison route added."""

from echoflow.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
