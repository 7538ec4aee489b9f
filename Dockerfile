# One image for every process of the platform: web, Celery workers and beat (docker-compose.yml
# picks the command). Dependencies come from requirements.txt only (test tools are in
# requirements-test.txt, which the image never installs).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# An unprivileged user; MEDIA_ROOT and STATIC_ROOT exist and belong to it, so the named volumes
# mounted there start out writable by it.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/emailplatform/media /var/lib/emailplatform/static \
    && chown -R app:app /var/lib/emailplatform
USER app

EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000", "--noreload"]
