# syntax=docker/dockerfile:1
# The web role (also runs `stylequeue migrate`, the sweeper and the webhooks worker): Flask
# under gunicorn.
# No TensorFlow: the `web` extra never pulls it, and the build checks it stayed out.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    STYLEQUEUE_VAR_DIR=/app/var \
    WEB_CONCURRENCY=2

RUN useradd --create-home --uid 10001 --user-group stylequeue
WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN mkdir -p stylequeue shared web worker worker/engine hooks cli migrations \
 && for d in stylequeue shared web worker worker/engine hooks cli migrations; do touch $d/__init__.py; done \
 && pip install '.[web,s3,postgres]' \
 && pip uninstall --yes stylequeue \
 && rm -rf stylequeue shared web worker hooks cli migrations build ./*.egg-info

# The code. `worker/` comes along only so `celery -A stylequeue.worker.app beat` can load the app;
# its TensorFlow is not installed here.
COPY stylequeue ./stylequeue
COPY migrations ./migrations
COPY shared ./shared
COPY web ./web
COPY worker ./worker
COPY hooks ./hooks
COPY cli ./cli
# Installed as the one `stylequeue` package (migrations included), then the sources removed.
RUN pip install --no-deps . \
 && rm -rf stylequeue shared web worker hooks cli migrations build ./*.egg-info \
 && python -c "import importlib.util as u, sys; sys.exit('TensorFlow must stay out of the web image' if u.find_spec('tensorflow') else 0)" \
 && mkdir -p /app/var && chown stylequeue:stylequeue /app/var

USER stylequeue
EXPOSE 8000
# 2 processes x 4 threads by default; WEB_CONCURRENCY sets the processes, GUNICORN_CMD_ARGS
# anything else. /dev/shm keeps gunicorn's heartbeat files off the container's disk.
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--threads", "4", "--timeout", "120", \
     "--graceful-timeout", "20", "--worker-tmp-dir", "/dev/shm", "--access-logfile", "-", \
     "stylequeue.web:create_app()"]
