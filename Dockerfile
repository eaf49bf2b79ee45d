# transferlab: the API and the GPU worker in one image (the command picks the role).
#
#   docker build -t transferlab .
#   docker run --gpus all -p 8000:8000 transferlab serve --host 0.0.0.0      # embedded, one box
#   docker compose up                                                          # postgres + redis + api + GPU worker
#
# The base image brings CUDA, cuDNN and a CUDA build of torch/torchvision, so pip installs only the
# service's own dependencies on top (torch>=2.10 is already satisfied).
FROM pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TRANSFERLAB_HOME=/var/lib/transferlab \
    TRANSFERLAB_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md alembic.ini constraints.txt ./
COPY alembic ./alembic
COPY engine ./engine
COPY core ./core
COPY cli ./cli
COPY service ./service
COPY worker ./worker
# Editable, so the migrations in /app/alembic stay beside the package that runs them.
RUN pip install -c constraints.txt -e . \
 && useradd --create-home --uid 1000 transferlab \
 && mkdir -p /var/lib/transferlab /data \
 && chown -R transferlab:transferlab /var/lib/transferlab /data

USER transferlab
# State (SQLite or nothing, checkpoints, artifacts, per-job resume folders) and the data sets.
VOLUME ["/var/lib/transferlab", "/data"]
EXPOSE 8000
ENTRYPOINT ["transferlab"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
