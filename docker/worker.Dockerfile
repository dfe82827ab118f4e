# syntax=docker/dockerfile:1
# The GPU worker: TensorFlow's CUDA image plus stylequeue's worker code. One GPU per
# container (docker-compose.yml reserves it), one Celery process with concurrency 1.
#
# TensorFlow comes from the base image (the version `worker-gpu` pins), so it is not
# downloaded again; bare-metal GPU nodes use `pip install '.[worker-gpu,s3,postgres]'` instead.
ARG TF_IMAGE=tensorflow/tensorflow:2.21.0-gpu
FROM ${TF_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=1 \
    KERAS_HOME=/var/cache/keras \
    STYLEQUEUE_VAR_DIR=/app/var

RUN useradd --create-home --uid 10001 --user-group stylequeue \
 && mkdir -p /var/cache/keras/models /app/var \
 && chown -R stylequeue:stylequeue /var/cache/keras /app/var
WORKDIR /app

COPY pyproject.toml README.md ./
RUN mkdir -p stylequeue shared web worker worker/engine hooks cli migrations \
 && for d in stylequeue shared web worker worker/engine hooks cli migrations; do touch $d/__init__.py; done \
 && python3 -m pip install --upgrade pip \
 && python3 -m pip install '.[s3,postgres]' 'keras>=3.10' \
 && python3 -m pip uninstall --yes stylequeue \
 && rm -rf stylequeue shared web worker hooks cli migrations build ./*.egg-info

COPY stylequeue ./stylequeue
COPY shared ./shared
COPY web ./web
COPY worker ./worker
COPY hooks ./hooks
COPY cli ./cli
COPY migrations ./migrations
RUN python3 -m pip install --no-deps . \
 && rm -rf stylequeue shared web worker hooks cli migrations build ./*.egg-info \
 && python3 -c "import tensorflow as tf; print('TensorFlow', tf.__version__)"

USER stylequeue
# ImageNet VGG19 weights are cached in $KERAS_HOME (a named volume in docker-compose.yml), so
# they are downloaded once per host, not at every container start.
CMD ["celery", "-A", "stylequeue.worker.app", "worker", "-Q", "style", "--concurrency", "1", \
     "--pool", "prefork", "--loglevel", "INFO", "--task-events", "--hostname", "worker@%h"]
