# The zchat image: the broker, the bots and the client all run from it.
#   docker build -t zchat:local .      (docker compose up builds it too)
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the package needs (README.md is its long description): a change
# to the tests keeps the build cache.
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY zchat ./zchat
# No C compiler in this image: pure Python, asked for up front so the build hook does
# not run mypyc only to find no compiler (hatch_build.py).
RUN ZCHAT_PURE=1 pip install '.[cluster]' \
    && rm -rf /src \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin zchat \
    && install -d -o zchat -g zchat /data

# The broker's history (--db /data/chat.db in docker-compose.yml): a new named
# volume copies this directory, owner included, so the broker can write it.
VOLUME /data

USER zchat
WORKDIR /home/zchat
# The broker's ROUTER (commands) and PUB (room events); `zchat web`'s page.
EXPOSE 5555 5556 8080
# zchat handles SIGTERM itself (a quick `docker compose down`); compose adds
# `init: true` as well, so an init process forwards signals and reaps.
ENTRYPOINT ["zchat"]
CMD ["--help"]
