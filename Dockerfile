# MiniObserv server image: gunicorn serving miniobserv.server.wsgi:app.
#   docker build -t miniobserv .
#   docker run -e AGENT_TOKEN=... -e DATABASE_URL=postgresql://... -p 8080:8080 miniobserv
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, from the metadata alone, so code changes reuse the cached layer.
COPY setup.cfg pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY miniobserv/__init__.py miniobserv/__init__.py
RUN pip install . && pip uninstall -y miniobserv
# The package itself; its migrations go to /usr/local/share/miniobserv (setup.cfg data_files).
COPY miniobserv ./miniobserv
RUN pip install --no-deps . \
    && cd / && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data --create-home miniobserv

USER miniobserv
WORKDIR /data
# Without DATABASE_URL the server keeps SQLite at /data/miniobserv.db (mount a volume there).
# WEB_CONCURRENCY: gunicorn workers (each with 32 threads; GUNICORN_CMD_ARGS="--threads N").
ENV DATABASE_URL=sqlite:////data/miniobserv.db \
    LISTEN_ADDR=0.0.0.0:8080 \
    WEB_CONCURRENCY=4
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
# The shipped config (miniobserv/server/gunicorn_conf.py): threaded workers, bounded request
# line and headers, timeouts from REQUEST_TIMEOUT/SHUTDOWN_TIMEOUT, migrations once in the
# master, bind from LISTEN_ADDR. Workers import the app after the fork: no --preload.
CMD ["gunicorn", "-c", "python:miniobserv.server.gunicorn_conf", "--access-logfile", "-", \
     "miniobserv.server.wsgi:app"]
