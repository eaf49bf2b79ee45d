"""The one settings object. Every knob is an environment variable with the TRANSFERLAB_ prefix.

Embedded (default): SQLite and a SQLite-backed Celery broker under TRANSFERLAB_HOME, workers started
by `transferlab serve`. Distributed: point DATABASE_URL at PostgreSQL and BROKER_URL at Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_PRODUCTION_TOKEN_CHARS = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSFERLAB_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development", description="production refuses unsafe defaults (no API token)."
    )
    home: Path = Field(Path("./var"), description="State folder: SQLite files, checkpoints, artifacts.")
    data_dir: Path | None = Field(None, description="Data sets root; default $TRANSFERLAB_HOME/data.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in HOME.")
    broker_url: str | None = Field(
        None, description="Celery broker; default an embedded SQLite broker in HOME that survives restarts."
    )
    download: bool = Field(False, description="Allow data set downloads (needs internet).")
    api_token: str | None = Field(None, description="When set, every request but health and docs needs it.")
    insecure_no_token: bool = Field(
        False,
        description="Let `transferlab serve` listen beyond loopback without an API token (insecure: anyone "
        "who reaches it can train and download models).",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto|cpu|cuda|cuda:N")

    embedded_workers: int = Field(1, ge=0, le=16, description="Worker processes `serve` starts (embedded).")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest /predict request body.")
    max_image_pixels: int = Field(25_000_000, ge=64, description="Largest image (width x height) accepted.")
    max_files_per_request: int = Field(64, ge=1, le=1024, description="Images per /predict request.")
    model_cache_size: int = Field(4, ge=1, le=64, description="Loaded checkpoints kept by the API.")
    # ---- /predict cost (service/predict_limits.py; used by service/routes/predict.py, service/inference.py)
    # 2**20: 64 files at 128 px, 20 at 224, 4 at 512 (vgg11_bn: 2.4-6 s of CPU on 2 cores; the old
    # 16e6 let one 5 KB request cost 90 s). Larger batches are split into several requests.
    max_predict_input_pixels: int = Field(
        1_048_576,
        ge=1024,
        description="Per /predict request: files x the checkpoint's input pixels (side squared); 422 above.",
    )
    max_concurrent_predictions: int = Field(
        8,
        ge=1,
        le=256,
        description="/predict requests served at once; up to 3x as many more wait up to 2 s, the rest "
        "get 429 with Retry-After.",
    )
    max_model_loads_per_minute: int = Field(
        12,
        ge=1,
        le=600,
        description="Checkpoint loads (cache misses) per minute; more get 429 with Retry-After.",
    )
    # ---- work budgets (core/budgets.py; the seed preset's heaviest job is 5.7e14 FLOPs and 1.1 GiB,
    # all its 73 jobs 4.1e16)
    max_job_work: float = Field(
        1e15,
        gt=0,
        description="Largest estimated job cost in FLOPs: epochs x training images x input pixels x the "
        "model's training FLOPs a pixel, plus evaluation (422 beyond).",
    )
    max_job_memory_bytes: int = Field(
        16 * 1024**3,
        ge=2**20,
        description="Largest estimated peak training memory of one job: batch x input pixels x the "
        "model's activation bytes a pixel, plus weights and optimiser state (422 beyond).",
    )
    max_experiment_work: float = Field(
        5e16, gt=0, description="Largest estimated cost in FLOPs of one experiment's jobs (422 beyond)."
    )
    max_active_jobs: int = Field(
        1000,
        ge=1,
        description="Queued plus running jobs in total, with the fine-tunes of experiments still "
        "pre-training; more get 429 with Retry-After.",
    )
    job_time_limit_flops_per_second: float = Field(
        5e9,
        gt=0,
        description="The slowest worker's training speed the time limit assumes (2 busy CPU cores "
        "measured 13-72 GFLOP/s): a job may run its estimated work / this x the factor.",
    )
    job_time_limit_factor: float = Field(
        2.0, gt=0, description="Safety factor of the time limit; a job past it fails, not retried."
    )
    job_time_limit_min_seconds: float = Field(
        600.0, gt=0, description="No job's time limit is shorter than this."
    )
    max_attempts: int = Field(3, ge=1, le=20, description="Starts per job before a dying worker fails it.")
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often a worker renews its job's lease.")
    resume_every_seconds: float = Field(
        30.0, ge=0, description="Save a running job's resume state at most this often (0: every epoch)."
    )
    stale_after_seconds: float = Field(
        60.0,
        gt=0,
        description="A worker's lease lasts this long from each renewal (others read the lease, not this); "
        "a queued job unclaimed this long is sent again.",
    )
    # ---- checkpoints in and out, ImageNet weights (issue #14, models: core/checkpoint_archive.py,
    # engine/pretrained.py). vgg11_bn's weights are 491 MB, its archive a few KB more.
    max_checkpoint_import_bytes: int = Field(
        600 * 1024 * 1024,
        ge=1024 * 1024,
        description="Largest POST /checkpoints archive, uploaded and unpacked (413 beyond).",
    )

    # ---- operations (#13): /metrics, log format, per-job logs (core/logs.py, core/job_logs.py)
    metrics_public: bool = Field(
        False, description="Serve GET /metrics without the API token (for a scraper on a private network)."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines of every process: text, or json (one JSON object per line)."
    )
    job_log_max_bytes: int = Field(
        1024 * 1024,
        ge=4096,
        le=64 * 1024 * 1024,
        description="Each job's own log (GET /jobs/{id}/logs) keeps at most its last this many bytes.",
    )

    # Numerics by measurement (issue 15, engine/calibrate.py): each job's first run of a model and
    # input size on a machine times a few training steps per candidate; the choice is cached in
    # <home>/calibration.json.
    calibration_budget_seconds: float = Field(
        20.0,
        ge=0,
        le=600,
        description="Most seconds a job spends timing numerics candidates (0: off, use the defaults).",
    )
    calibration_compile_on_cpu: bool = Field(
        False, description="Also time torch.compile on a CPU worker (always timed on a GPU)."
    )

    # ---- folder data sets and uploads (engine/data/folders.py, core/datasets.py, core/dataset_upload.py)
    check_data_at_submission: bool = Field(
        True,
        description="POST /jobs and /experiments refuse (422) a data set whose files are not under the "
        "data root; turn off only where the API cannot see the workers' data root.",
    )
    folder_max_images: int = Field(
        50_000, ge=2, description="Images one folder data set may hold, both splits together."
    )
    folder_max_image_pixels: int = Field(
        4_000_000, ge=64, description="Largest image (width x height) in a folder data set."
    )
    folder_max_total_bytes: int = Field(
        2 * 1024**3, ge=1024, description="Largest total size of a folder data set's image files."
    )
    folder_max_image_side: int = Field(
        128,
        ge=8,
        le=512,
        description="Cap on the side a folder data set is stored at (default: its median shorter side).",
    )
    max_dataset_upload_bytes: int = Field(
        512 * 1024**2, ge=1024, description="Largest POST /datasets request body (the zip or tar)."
    )
    dataset_upload_max_files: int = Field(
        20_000, ge=1, description="Entries one uploaded zip or tar may hold (files and folders)."
    )
    dataset_upload_max_ratio: float = Field(
        100.0,
        gt=1,
        description="Largest uncompressed / compressed size of a zip entry (PNG and JPEG barely "
        "compress: a larger ratio is a zip bomb).",
    )

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment == "production" and not self.api_token:
            raise ValueError("TRANSFERLAB_API_TOKEN must be set when TRANSFERLAB_ENVIRONMENT=production")
        if self.environment == "production" and len(self.api_token or "") < MIN_PRODUCTION_TOKEN_CHARS:
            raise ValueError(
                f"TRANSFERLAB_API_TOKEN must be at least {MIN_PRODUCTION_TOKEN_CHARS} characters in "
                "production; "
                'make one with: python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        if self.stale_after_seconds <= self.heartbeat_seconds:
            raise ValueError("TRANSFERLAB_STALE_AFTER_SECONDS must exceed TRANSFERLAB_HEARTBEAT_SECONDS")
        return self

    @property
    def data_root(self) -> Path:
        return (self.data_dir or self.home / "data").resolve()

    @property
    def checkpoints_dir(self) -> Path:
        return (self.home / "checkpoints").resolve()

    @property
    def runs_dir(self) -> Path:
        """Per-job working folders (resume state), kept until the job ends."""
        return (self.home / "runs").resolve()

    @property
    def calibration_cache(self) -> Path:
        """The numerics calibration's choices on this machine (engine/calibrate.py)."""
        return (self.home / "calibration.json").resolve()

    @property
    def artifacts_dir(self) -> Path:
        return (self.home / "artifacts").resolve()

    @property
    def logs_dir(self) -> Path:
        """Each job's own log lines, one file a job (core/job_logs.py)."""
        return (self.home / "logs").resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'transferlab.sqlite').resolve()}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.home / 'broker.sqlite').resolve()}"

    @property
    def is_embedded_broker(self) -> bool:
        return self.celery_broker_url.startswith("sqla+")


@lru_cache
def get_settings() -> Settings:
    """Read the environment once per process (tests call get_settings.cache_clear())."""
    return Settings()
