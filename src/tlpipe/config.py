"""The typed, validated configuration built from params.yaml, and the pipeline's paths.

Every stage calls `load_config()` once and takes what it needs from the result;
nothing else reads params.yaml. A bad value fails with one line naming the key,
the value and what is allowed.
"""

import sys
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, WrapValidator, field_validator, model_validator

from tlpipe.errors import UserError

PARAMS_FILE = Path("params.yaml")
HEAD_NAMES = ("flatten", "gap")

# Where each stage writes; dvc.yaml names the same paths.
SOURCE_FILE = Path("data/source.json")
RAW_DIR = Path("data/raw")
MANIFEST = Path("data/split/manifest.csv")
FEATURES_DIR = Path("data/features")
MODELS_DIR = Path("models")
REPORTS_DIR = Path("reports")
TRAIN_REPORTS_DIR = REPORTS_DIR / "train"
EVAL_REPORTS_DIR = REPORTS_DIR / "eval"
FINETUNE_REPORTS_DIR = REPORTS_DIR / "finetune"
EXPORTS_DIR = MODELS_DIR / "export"
EXPORT_REPORTS_DIR = REPORTS_DIR / "export"
EXPORT_REPORT = REPORTS_DIR / "export.md"
PLOTS_DIR = REPORTS_DIR / "plots"
DATA_REPORT = REPORTS_DIR / "data.md"
DATA_FILES = REPORTS_DIR / "data_files.csv"

# Every number in params.yaml has a lower and an upper bound (tests/test_config.py checks that), so a
# value its consumer cannot take fails here, in one line, before any stage starts work.
MAX_SEED = 2**32 - 1  # NumPy and TensorFlow (keras.utils.set_random_seed) take seeds 0 to 2**32 - 1
MAX_EPOCHS = 100_000
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(ge=0, le=1)]
LearningRate = Annotated[float, Field(gt=0, le=1)]
Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
BatchSize = Annotated[int, Field(ge=1, le=65_536)]  # images (or feature rows) per step
Width = Annotated[int, Field(ge=1, le=65_536)]  # units of a hidden Dense layer
# A count that is an int in params.yaml (4, not 4.0 or true) where a union also takes names.
StrictCount = Annotated[int, Strict()]


def _one_error(message: str) -> WrapValidator:
    """The field's own checks, failing with one error naming the key, not one per member of a union."""
    def validate(value, handler):
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(message) from None
    return WrapValidator(validate)


class _Section(BaseModel):
    # An unknown key is almost always a typo: refuse it rather than ignore it.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(_Section):
    url: str = Field(min_length=1)
    sha256: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    max_files: Annotated[int, Field(ge=1, le=10**9)] = 1_000_000
    max_bytes: Annotated[int, Field(ge=1, le=2**50)] = 50 * 2**30  # at most 1 PiB
    max_pixels: Annotated[int, Field(ge=1, le=2**32)] = 89_478_485  # Pillow's own default limit; at most 65536 x 65536

    @field_validator("url")
    @classmethod
    def _dvc_can_track(cls, url: str) -> str:
        # dvc.yaml declares dataset.url as the fetch stage's dependency: DVC tracks paths and
        # http(s) URLs (ETag / Last-Modified), but cannot read a file:// URL.
        if url.startswith("file://"):
            from urllib.request import url2pathname  # here: 40 ms to import, for this message only

            path = url2pathname(urllib.parse.urlparse(url).path)
            raise ValueError(f"DVC cannot track file:// URLs as a dependency; write the path itself: {path}")
        return url


class SplitConfig(_Section):
    val: Fraction
    test: Fraction
    max_skipped_fraction: Share = 0.05

    @model_validator(mode="after")
    def _leaves_training_images(self):
        if self.val + self.test >= 1:
            raise ValueError(f"split.val + split.test = {self.val + self.test:g}: must be < 1")
        return self


class TrunkConfig(_Section):
    name: Literal["vgg16", "mobilenet", "mobilenet_v2"]
    weights: str
    image_size: Annotated[int, Field(ge=32, le=1024)]
    output_layer: str = ""
    batch_size: BatchSize = 32
    precision: Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"] = "auto"

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: str) -> str:
        if weights in ("imagenet", "hed", "none") or weights.endswith(".h5"):
            return weights
        raise ValueError("must be imagenet, hed, none or a path to a .weights.h5 file")

    @model_validator(mode="after")
    def _hed_is_vgg16(self):
        if self.weights == "hed" and self.name != "vgg16":
            raise ValueError(f"trunk.weights = hed: HED weights exist for vgg16 only, not {self.name}")
        return self


class HeadConfig(_Section):
    hidden: list[Width]
    dropout: Annotated[float, Field(ge=0, lt=1)]
    learning_rate: LearningRate
    epochs: Epochs
    batch_size: BatchSize


class HeadsConfig(_Section):
    flatten: HeadConfig
    gap: HeadConfig


class TrainConfig(_Section):
    patience: Epochs
    jit_compile: bool = False
    repeats: Annotated[int, Field(ge=1, le=20)] = 3  # as in params.yaml: a spread needs more than one run
    calibrate: bool = False
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0


# Layer arguments that follow from the pipeline, not from params.yaml: the layers see
# 0-255 images, must keep the trunk's input size, and draw from augment.seed.
ARGS_SET_BY_PIPELINE = {
    "value_range": "the images are 0-255 when augmented",
    "target_size": "trunk.image_size",
    "seed": "augment.seed",
}


class AugmentLayerConfig(_Section):
    name: Literal["RandomFlip", "RandomRotation", "RandomCropAndResize", "RandAugment"]  # keras_cv.layers
    args: dict[str, Any] = {}


class AugmentConfig(_Section):
    layers: list[AugmentLayerConfig]
    seed: Seed
    views: Annotated[int, Field(ge=0, le=100)]  # the trunk runs 1 + views times over the training split

    @model_validator(mode="after")
    def _pipeline_sets_some_args(self):
        for index, layer in enumerate(self.layers):
            taken = sorted(set(layer.args) & ARGS_SET_BY_PIPELINE.keys())
            if taken:
                raise ValueError(
                    f"augment.layers.{index}.args.{taken[0]}: set by the pipeline ({ARGS_SET_BY_PIPELINE[taken[0]]}); leave it out"
                )
        return self

    @model_validator(mode="after")
    def _views_need_layers(self):
        if self.views and not self.layers:
            raise ValueError(f"augment.views = {self.views}: needs at least one entry in augment.layers")
        return self


class RayConfig(_Section):
    actors: Annotated[int, Field(ge=0, le=10_000)] = 0  # 0: one per GPU (gpus_per_actor each) where the cluster has GPUs, else one per node
    cpus_per_actor: Annotated[float, Field(gt=0, le=1024)] = 1.0
    gpus_per_actor: Annotated[float, Field(gt=0, le=16)] = 1.0  # used only where the cluster has GPUs


class FeaturesConfig(_Section):
    engine: Literal["local", "ray"] = "local"
    ray: RayConfig = RayConfig()


class FinetuneConfig(_Section):
    epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]  # 0: off
    from_layer: Annotated[
        Annotated[StrictCount, Field(ge=1, le=1000)] | Annotated[str, Field(min_length=1)],
        _one_error("must be the name of the first trunk layer to unfreeze, or a number of top layers (1 to 1000)"),
    ]
    learning_rate: LearningRate
    batch_size: BatchSize
    patience: Epochs
    augment: bool


class RuntimeConfig(_Section):
    devices: Annotated[
        Literal["auto", "cpu", "all"] | Annotated[StrictCount, Field(ge=1, le=1024)],
        _one_error("must be auto, cpu, all or a number of devices (1 to 1024)"),
    ] = "auto"


class ReportConfig(_Section):
    baseline: str = Field(default="auto", min_length=1)


class RobustnessConfig(_Section):
    shifts: Annotated[int, Field(ge=0, le=4)] = 4


class ExportConfig(_Section):
    formats: list[Literal["saved_model", "tflite", "onnx"]] = []
    tflite_float16: bool = False

    @field_validator("formats")
    @classmethod
    def _each_once(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError("lists a format twice; name each once")
        return formats


class Config(_Section):
    seed: Seed
    dataset: DatasetConfig
    split: SplitConfig
    trunk: TrunkConfig
    train: TrainConfig
    heads: HeadsConfig
    augment: AugmentConfig
    features: FeaturesConfig = FeaturesConfig()
    finetune: FinetuneConfig
    runtime: RuntimeConfig = RuntimeConfig()
    report: ReportConfig = ReportConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _every_run_has_a_seed(self):
        # Training run r seeds with seed + r (tlpipe.stages.train), and each of those must be a valid seed.
        if self.seed + self.train.repeats - 1 > MAX_SEED:
            raise ValueError(f"seed = {self.seed}: with train.repeats = {self.train.repeats} the runs seed up to seed + "
                             f"{self.train.repeats - 1}, above {MAX_SEED}; lower seed or train.repeats")
        return self

    @model_validator(mode="after")
    def _finetune_augmentation_needs_layers(self):
        if self.finetune.epochs and self.finetune.augment and not self.augment.layers:
            raise ValueError("finetune.augment = true: needs at least one entry in augment.layers")
        return self

    @model_validator(mode="after")
    def _ray_engine_without_views(self):
        # The augmented views follow from one seeded sequence of draws, which the local engine runs in order.
        if self.features.engine == "ray" and self.augment.views:
            raise ValueError(f"features.engine = ray: needs augment.views = 0 (it is {self.augment.views}); "
                             "augmented views run on features.engine: local")
        return self

    def head(self, name: str) -> HeadConfig:
        if name not in HEAD_NAMES:
            raise UserError(f"unknown head {name!r}: must be one of {', '.join(HEAD_NAMES)}")
        return getattr(self.heads, name)


def load_config(path: Path = PARAMS_FILE) -> Config:
    """Read and validate params.yaml; raise UserError with one line on any problem."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run from the project root") from None
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"{path}: {_describe(error)}") from None


def _describe(error: ValidationError) -> str:
    """The first validation problem as 'key = value: what is allowed'."""
    problem = error.errors(include_url=False)[0]
    key = ".".join(str(part) for part in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        return f"{key}: missing; add it (see the documented defaults in the README)"
    if problem["type"] == "extra_forbidden":
        return f"{key}: unknown key; check its spelling"
    if isinstance(problem["input"], dict):  # a check across several keys names them itself
        return message
    return f"{key} = {problem['input']!r}: {message}"


def head_from_argv(stage: str) -> str:
    """The head a per-head stage was called for: python -m tlpipe.stages.<stage> <head> (or tlpipe <stage> <head>)."""
    if len(sys.argv) != 2 or sys.argv[1] not in HEAD_NAMES:
        raise UserError(f"usage: tlpipe {stage} {{{','.join(HEAD_NAMES)}}}")
    return sys.argv[1]
