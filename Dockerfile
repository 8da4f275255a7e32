# EchoFlow production image: one image for web (gunicorn), worker, beat and Flower; docker-compose.yml picks the
# process with `command:`. Dependencies come from uv.lock exactly (`uv sync --frozen`), without the dev group.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    PATH=/opt/venv/bin:$PATH \
    DJANGO_SETTINGS_MODULE=echoflow.settings

# uv from PyPI; any 0.x release from 0.13 on reads this uv.lock.
RUN pip install "uv>=0.13,<1" \
 && groupadd --system --gid 10001 echoflow \
 && useradd --system --uid 10001 --gid echoflow --home-dir /app --no-create-home --shell /usr/sbin/nologin echoflow

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev

# The code stays owned by root (read-only for the app); only var/ (static files, embedded-mode data) is writable.
COPY . .
RUN mkdir -p /app/var && chown echoflow:echoflow /app/var

USER echoflow

# Static files for WhiteNoise, into var/static (STATIC_ROOT). Build-only values: a throwaway SECRET_KEY (so no key
# file is generated into the image), a SQLite path outside the app and a Redis URL that is never connected to (so
# no filesystem broker folders are created).
RUN SECRET_KEY=collectstatic-build-only-not-a-secret \
    DEBUG=0 \
    DATABASE_URL=sqlite:////tmp/collectstatic.sqlite3 \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    python manage.py collectstatic --noinput \
 && rm -f /tmp/collectstatic.sqlite3

EXPOSE 8000 5555

CMD ["gunicorn", "echoflow.wsgi:application", "--bind", "0.0.0.0:8000"]
