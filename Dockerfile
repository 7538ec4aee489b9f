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

# Static files are collected into the image at build (whitenoise serves them from STATIC_ROOT);
# settings need a SECRET_KEY to load, so a throwaway one serves for this step only.
ENV STATIC_ROOT=/var/lib/emailplatform/static \
    STATIC_MANIFEST=1
RUN SECRET_KEY=collectstatic-only DEBUG=0 python manage.py collectstatic --noinput

# An unprivileged user; MEDIA_ROOT exists and belongs to it, so the named volume mounted there
# starts out writable by it. STATIC_ROOT stays root's: the app only reads it.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/emailplatform/media \
    && chown -R app:app /var/lib/emailplatform/media
USER app

EXPOSE 8000
# gunicorn, 2 processes x 8 threads (docker-compose.yml says why: WEB_WORKERS, WEB_THREADS).
CMD ["gunicorn", "emailplatform.wsgi:application", "--bind", "0.0.0.0:8000", "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--timeout", "90", "--access-logfile", "-"]
