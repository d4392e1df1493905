# imgq image: one image for every role (api, worker, sim); the compose `command` picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TIKTOKEN_CACHE_DIR=/home/imgq/.cache/tiktoken

RUN groupadd --system --gid 10001 imgq \
    && useradd --system --uid 10001 --gid imgq --create-home --home-dir /home/imgq imgq

WORKDIR /app
# README.md* : pyproject names the readme; the glob keeps the build working before it exists.
COPY pyproject.toml README.md* ./
COPY imgq/ imgq/
COPY shared/ shared/
COPY workers/ workers/
COPY producer/ producer/
COPY simulator/ simulator/
RUN pip install . && rm -rf build *.egg-info

# Never root at run time; the tiktoken cache (filled offline from bpe-openai) lives in $HOME.
USER imgq
EXPOSE 8080 8400 9100
ENTRYPOINT ["imgq"]
CMD ["--help"]
