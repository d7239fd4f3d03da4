# The one image for every process: web (gunicorn), worker and beat differ only by their command (Procfile,
# docker-compose.yml). Configuration comes from the environment at run time; see the README's Production
# section and .env.example.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_ENV=production \
    VAR_DIR=/srv/dsr/var \
    EXPORTS_DIR=/srv/dsr/exports

# Fonts for PDF reports: DejaVu (Latin, Greek, Cyrillic) and Droid Sans Fallback (CJK).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-droid-fallback \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Static files are collected into the image (whitenoise serves them). Production settings refuse to load
# without secrets, so throwaway ones are made up for this one command and never stored in the image.
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(60))')" \
    FIELD_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    AUDIT_CHAIN_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(40))')" \
    ALLOWED_HOSTS=build.invalid \
    REDIS_URL=redis://build.invalid:6379/0 \
    DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    VAR_DIR=/tmp/build-var \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-var /tmp/build.sqlite3

RUN useradd --system --uid 1000 --home-dir /srv/dsr dsr \
    && mkdir -p /srv/dsr/var /srv/dsr/exports \
    && chown -R dsr:dsr /srv/dsr \
    && chmod 700 /srv/dsr/exports
USER dsr

EXPOSE 8000
# No HEALTHCHECK here: worker and beat run from the same image without a web server. The compose file
# checks the web service's /readyz.
CMD ["gunicorn", "compliance.wsgi", "-c", "gunicorn.conf.py"]
