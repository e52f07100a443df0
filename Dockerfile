# The engine (and the LLM stub, same image) for docker-compose.toxiproxy.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

# Dependencies first, read from pyproject.toml (the one list), so that a code change
# does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import subprocess, sys, tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
subprocess.check_call([sys.executable, '-m', 'pip', 'install', *deps])"

COPY engine/ engine/
COPY policies/ policies/

RUN useradd --system --no-create-home --user-group reslab
USER reslab

EXPOSE 8000
CMD ["python", "-m", "engine.service"]
