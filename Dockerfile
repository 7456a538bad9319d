# syntax=docker/dockerfile:1
# ServeLab's emulator image: `servelab serve` speaks vLLM's OpenAI-compatible API and metrics
# without a GPU. The course's manifests run it as servelab/emulator:0.1.0:
#   docker build -t servelab/emulator:0.1.0 .
#   docker run --rm -p 8000:8000 servelab/emulator:0.1.0 meta-llama/Llama-3.1-8B --gpu h100-80gb --port 8000
# The same image runs the LLM judge (python -m lab.judge) and the queue worker
# (python -m lab.queue_worker).
#
# Small on purpose: only what the emulator, the judge and the worker import, not the lab's
# Streamlit/plotting stack (the project's full dependency list). The versions are the ones
# the test suite ran with. sniffio is named because anyio imports it without declaring it
# (tests/test_cluster_docker.py found this). uvloop and httptools are the emulator's event loop
# and HTTP parser under load (docs/emulator.md); tokenizers reads `--tokenizer DIR`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install \
        simpy==4.1.2 numpy==2.4.6 scipy==1.17.1 pyyaml==6.0.3 pydantic==2.13.4 tqdm==4.70.1 \
        fastapi==0.165.0 uvicorn==0.54.0 prometheus-client==0.26.0 httpx==0.28.1 redis==8.1.0 \
        sniffio==1.3.1 promql-parser==0.12.0 \
        uvloop==0.23.0 httptools==0.9.0 tokenizers==0.23.3

WORKDIR /opt/servelab
COPY pyproject.toml README.md ./
COPY sim ./sim
COPY lab ./lab
# --no-deps: the runtime set above, not pyproject's full list.
RUN pip install --no-deps . && rm -rf /opt/servelab/build

# A numeric non-root user, so that Kubernetes' runAsNonRoot can verify it.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin servelab
USER 10001
WORKDIR /tmp

EXPOSE 8000
# Docker's own health check (Kubernetes ignores it and uses the manifests' probes instead).
# It assumes the default --port 8000.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

ENTRYPOINT ["servelab", "serve"]
