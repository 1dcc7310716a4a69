"""``Encoder``: texts and images in, L2-normalised float32 embeddings out.

Reads a model from the Hub (or a local folder laid out like a Hub repo) once, in
``Encoder.from_pretrained``; ``encode_texts`` / ``encode_images`` are then pure functions of their
input. Writes nothing (the Hub cache aside).

Two families sit behind one interface:
- MultiEmbedTR (config ``model_type: multimodal_embedder``), rebuilt natively in multiembedtr.py;
- standard dual encoders from transformers (``CLIPModel``, ``SiglipModel``), so a multilingual
  CLIP can be tried on the same pipeline.

Every output obeys one contract: ``np.float32``, shape ``(n, dim)``, rows of unit L2 norm, so an
inner product is a cosine similarity. A row that comes out NaN or infinite is never returned:
``NonFiniteEmbeddingError`` names it instead.

Devices: ``device="auto"`` or ``"cuda"`` means ``cuda:LOCAL_RANK`` (torchrun sets LOCAL_RANK), so
every process of a multi-GPU run gets its own GPU. The default dtype is bfloat16 on GPUs of compute
capability 8.0 and up (Ampere and later), float16 below (T4, V100: bf16 there is only emulated);
on a CPU, bfloat16 where it has native bf16 instructions (AVX512-BF16, AMX), else float32.

For a feed that decodes in other processes (pipeline/feed.py), ``Encoder.image_preprocessor``
turns PIL images into pixel tensors anywhere, and ``Encoder.encode_pixels`` embeds them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .images import ImageInput, open_image
from .manifest import SNAPSHOT_FILES, component_folders, snapshot_commit
from .multiembedtr import (
    MODEL_TYPE,
    PICKLE_FILE,
    SAFETENSORS_FILE,
    TEXT_MAX_LENGTH,
    MultiEmbedTRConfig,
    build_model,
    fingerprint_state_dict,
    resolve_component,
)
from .texts import is_valid_unicode

DUAL_ENCODER_TYPES = ("clip", "siglip")
# A progress bar is worth its noise only when a call takes more than a few batches.
PROGRESS_MIN_ITEMS = 256
# On CPU, DINOv2-base runs fastest in forward passes of 8 images whatever the caller's batch
# (benchmarks/encode.py, 2 cores, bf16: 6.3 images/s at 8, 6.2 at 16, 5.6 at 32), presumably
# because the activations of 8 images stay in cache. The caller's batch_size still sets how
# many images are decoded and reported at a time.
CPU_IMAGE_FORWARD_BATCH = 8
# The most characters of a text that reach the tokenizer. The encoders keep 128 tokens (or the
# model's maximum), far fewer than this, but a fast tokenizer reads the whole string before it
# truncates, so a multi-megabyte query would hold a worker for seconds.
TEXT_MAX_CHARS = 100_000
# The longest side an image keeps, as a multiple of its short side (``_within_aspect``).
MAX_ASPECT = 8

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


class NonFiniteEmbeddingError(ValueError):
    """A model produced NaN or infinite values; ``rows`` (and the message) name the inputs."""

    def __init__(self, message: str, rows: list[int]):
        super().__init__(message)
        self.rows = rows


class Encoder:
    """Encodes Turkish text and images into one normalised embedding space.

    Use ``Encoder.from_pretrained``; the constructor takes an already-built backend.
    """

    def __init__(
        self,
        backend: _Backend,
        *,
        model_id: str,
        revision: str | None,
        fingerprint: str,
        device: torch.device,
        dtype: torch.dtype,
    ):
        self._backend = backend
        self.model_id = model_id
        self.revision = revision
        self.fingerprint = fingerprint
        self.device = device
        self.dtype = dtype

    @property
    def dim(self) -> int:
        return self._backend.dim

    @property
    def component_revisions(self) -> dict[str, str]:
        """{Hub id: commit} of the components loaded from the Hub ({}: none, or all local)."""
        return dict(self._backend.component_revisions)

    @property
    def model(self) -> torch.nn.Module:
        """The underlying torch module (MultiEmbedTR, CLIPModel or SiglipModel), for inspection."""
        return self._backend.model

    def __repr__(self) -> str:
        return (
            f"Encoder(model_id={self.model_id!r}, revision={self.revision!r}, dim={self.dim}, "
            f"device={self.device}, dtype={self.dtype}, fingerprint={self.fingerprint[:19]}...)"
        )

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        revision: str | None = None,
        device: str = "auto",
        dtype: str | torch.dtype | None = None,
        component_revisions: dict[str, str] | None = None,
    ) -> Encoder:
        """Load a MultiEmbedTR, CLIP or SigLIP model from the Hub or a local folder.

        Args:
            model_id_or_path: a Hub repo id (``utkubascakir/MultiEmbedTR``) or a local folder
                holding config.json and model.safetensors or pytorch_model.bin.
            revision: a branch, tag or commit of the Hub repo; the resolved commit is recorded.
                Ignored for a local folder, which has no commits (``encoder.revision`` None).
            device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
                ``"cuda:1"``, ... ``"auto"`` and ``"cuda"`` take ``cuda:LOCAL_RANK`` (0 when unset).
            dtype: ``None`` picks the fastest dtype that keeps cosine >= 0.999 to float32:
                bfloat16 on CPUs with native bf16 and on GPUs of compute capability >= 8.0,
                float16 on older GPUs, float32 otherwise. Pass ``"float32"`` to force full
                precision.
            component_revisions: {Hub id: commit} for MultiEmbedTR's text and vision
                components named by Hub id (their configs, tokenizer and image processor):
                load them at those commits, as a manifest recorded them (None: their main
                branch). ``encoder.component_revisions`` says which commits were loaded.
        """
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(dtype, torch_device)
        model_dir, model_id, resolved_revision = _locate(str(model_id_or_path), revision)
        config_path = model_dir / "config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        model_type = config.get("model_type")
        if model_type == MODEL_TYPE:
            backend, fingerprint = _MultiEmbedTRBackend.load(model_dir, component_revisions)
        elif model_type in DUAL_ENCODER_TYPES:
            backend, fingerprint = _DualEncoderBackend.load(model_dir, model_type)
        else:
            raise ValueError(
                f"{model_id}: unsupported model_type {model_type!r} in config.json; expected "
                f"{MODEL_TYPE!r} (MultiEmbedTR) or one of {', '.join(DUAL_ENCODER_TYPES)}"
            )
        backend.to(torch_device, torch_dtype)
        return cls(
            backend,
            model_id=model_id,
            revision=resolved_revision,
            fingerprint=fingerprint,
            device=torch_device,
            dtype=torch_dtype,
        )

    def encode_texts(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed texts. Raises ValueError on an empty or whitespace-only text."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a list of strings; wrap a single query in [...]")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{i} is a {type(text).__name__}, not a str")
            if not text.strip():
                raise ValueError(f"text #{i} is empty or whitespace only; give a non-empty text")
            if not is_valid_unicode(text):
                raise ValueError(
                    f"text #{i} is not valid Unicode (it holds a lone surrogate such as "
                    "'\\ud800'); fix its encoding"
                )
        texts = [text[:TEXT_MAX_CHARS] for text in texts]
        # Longest first, as sentence-transformers does: batches of similar length pad less,
        # and an out-of-memory error shows up on the first batch rather than the last.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        sorted_texts = [texts[i] for i in order]
        out = self._run(
            sorted_texts, self._backend.embed_texts, batch_size, show_progress_bar, "text", order
        )
        result = np.empty_like(out)
        result[order] = out
        return result

    def encode_images(
        self,
        images: Sequence[ImageInput],
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed images given as paths, bytes or PIL images.

        Raises ``ImageLoadError`` (a ValueError) naming the first file that cannot be read.
        """
        images = list(images)
        preprocess = self.image_preprocessor

        def embed(batch: list) -> torch.Tensor:
            pixels = preprocess([open_image(img) for img in batch])
            return self._backend.embed_pixels(self._to_device(pixels))

        return self._run(images, embed, batch_size, show_progress_bar, "image")

    @property
    def image_preprocessor(self) -> ImagePreprocessor:
        """A picklable function: RGB PIL images -> float32 pixel tensor (n, 3, H, W) on CPU.

        ``encode_images`` is exactly ``encode_pixels(image_preprocessor(images))``, so worker
        processes can do the preprocessing and the embeddings stay bit for bit the same.
        """
        return ImagePreprocessor(self._backend.image_processor)

    def encode_pixels(self, pixels: torch.Tensor, first_row: int = 0) -> np.ndarray:
        """Embed already-preprocessed images (``image_preprocessor``'s output), one batch.

        ``pixels`` may be in pinned CPU memory: the copy to the GPU is then asynchronous.
        ``first_row`` only numbers the rows in a ``NonFiniteEmbeddingError``.
        """
        if pixels.ndim != 4:
            raise ValueError(f"pixels must be (n, 3, H, W), got shape {tuple(pixels.shape)}")
        with torch.inference_mode():
            vectors = self._backend.embed_pixels(self._to_device(pixels)).float()
            self._check_finite(vectors, list(range(first_row, first_row + len(pixels))), "image")
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
            return vectors.cpu().numpy()

    def _to_device(self, pixels: torch.Tensor) -> torch.Tensor:
        # non_blocking only helps (and is only safe to rely on) from pinned memory.
        non_blocking = self.device.type == "cuda" and pixels.is_pinned()
        return pixels.to(self.device, non_blocking=non_blocking).to(self.dtype)

    def _check_finite(self, vectors: torch.Tensor, rows: list[int], kind: str) -> None:
        finite = torch.isfinite(vectors).all(dim=-1)
        if bool(finite.all()):
            return
        bad = [rows[i] for i in torch.nonzero(~finite).flatten().tolist()]
        shown = ", ".join(f"#{r}" for r in sorted(bad)[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise NonFiniteEmbeddingError(
            f"{kind} embedding(s) {shown}{more} (0-based, in the order given) came out NaN or "
            f"infinite with {self.dtype} on {self.device}; nothing was returned for them. "
            "Encode again with dtype='float32' (encode --dtype float32).",
            sorted(bad),
        )

    def _run(
        self,
        items: list,
        embed: Callable[[list], torch.Tensor],
        batch_size: int,
        show_progress_bar: bool | None,
        kind: str,
        positions: list[int] | None = None,
    ) -> np.ndarray:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = len(items) >= PROGRESS_MIN_ITEMS
        with (
            torch.inference_mode(),
            tqdm(total=len(items), disable=not show_progress_bar, unit="item") as bar,
        ):
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                vectors = embed(batch).float()
                rows = range(start, start + len(batch))
                self._check_finite(
                    vectors, [positions[r] for r in rows] if positions else list(rows), kind
                )
                # Normalise again in float32: the contract is unit norm to float32 precision.
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out[start : start + len(batch)] = vectors.cpu().numpy()
                bar.update(len(batch))
        return out


class _Backend:
    """What the Encoder needs from a model family."""

    dim: int
    component_revisions: dict[str, str] = {}  # replaced per backend, never mutated

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        raise NotImplementedError

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels already on the device, in the backend's dtype."""
        raise NotImplementedError


class ImagePreprocessor:
    """The model's image processor as a plain picklable function (for DataLoader workers)."""

    def __init__(self, image_processor):
        self.image_processor = image_processor
        # Only a processor that scales the short side and keeps a centred square (DINOv2's,
        # CLIP's) ignores what the cut removes; SigLIP's squeezes the whole image to a square.
        size = getattr(image_processor, "size", None) or {}
        self.cut = "shortest_edge" in size and bool(getattr(image_processor, "do_center_crop", 0))

    def __call__(self, images: list) -> torch.Tensor:
        if self.cut:
            images = [_within_aspect(image) for image in images]
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return pixels.float()


def _within_aspect(image):
    """``image``, its long side cut to MAX_ASPECT times the short one around the centre.

    The processors scale the short side to about 256 pixels and keep a centred square, so the
    cut loses nothing they keep; without it a 20000x1 strip is scaled to 5,120,000x256 pixels
    (gigabytes). Images within MAX_ASPECT, every ordinary photo, pass unchanged.
    """
    width, height = image.size
    short = min(width, height)
    if max(width, height) <= MAX_ASPECT * short:
        return image
    kept = MAX_ASPECT * short
    if width > height:
        left = (width - kept) // 2
        return image.crop((left, 0, left + kept, height))
    top = (height - kept) // 2
    return image.crop((0, top, width, top + kept))


class _MultiEmbedTRBackend(_Backend):
    def __init__(self, model, tokenizer, image_processor, dim: int):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.dim = dim
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @classmethod
    def load(cls, model_dir: Path, pinned: dict | None = None) -> tuple[_MultiEmbedTRBackend, str]:
        """``pinned``: {Hub id: commit} of the components to load at a recorded commit."""
        from transformers import AutoTokenizer

        config = MultiEmbedTRConfig.from_file(model_dir / "config.json")
        folders, revisions = [], {}
        for name in (config.text_model_name, config.vision_model_name):
            folder, commit = resolve_component(name, model_dir, (pinned or {}).get(name))
            folders.append(folder)
            if commit is not None:
                revisions[name] = commit
        text_dir, vision_dir = folders
        model, fingerprint = build_model(model_dir, config, text_dir, vision_dir)
        backend = cls(
            model,
            AutoTokenizer.from_pretrained(text_dir),
            _image_processor(vision_dir),
            config.embed_dim,
        )
        backend.component_revisions = revisions
        return backend, fingerprint

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        # Only the encoders change dtype; the small heads stay float32 (see encode_text).
        self.model.to(device)
        rotary = _float32_rotary_buffers(self.model.text_encoder)
        self.model.text_encoder.to(dtype)
        self.model.vision_encoder.to(dtype)
        # Module.to(dtype) rounds every floating buffer, ModernBERT's rotary frequencies too
        # (bf16 keeps 8 bits: angles off by up to ~0.1 rad at position 127). They are tiny and
        # the rotary code computes in float32 anyway, so put the exact values back.
        for module, name, value in rotary:
            setattr(module, name, value.to(device))
        self.device, self.dtype = device, dtype

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        # Pad to the longest text in the batch, not to max_length: ~1.5x faster on CPU.
        inputs = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=TEXT_MAX_LENGTH,
            return_tensors="pt",
        )
        return self.model.encode_text(
            inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        )

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        step = CPU_IMAGE_FORWARD_BATCH if self.device.type == "cpu" else len(pixels)
        return torch.cat(
            [self.model.encode_image(pixels[i : i + step]) for i in range(0, len(pixels), step)]
        )


class _DualEncoderBackend(_Backend):
    """transformers CLIPModel / SiglipModel through their text and image feature functions."""

    def __init__(self, model, tokenizer, image_processor, model_type: str):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_type = model_type
        self.dim = int(model.config.projection_dim if model_type == "clip" else _siglip_dim(model))
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @classmethod
    def load(cls, model_dir: Path, model_type: str) -> tuple[_DualEncoderBackend, str]:
        from transformers import AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
        model.eval()
        fingerprint = fingerprint_state_dict(model.state_dict())
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        image_processor = _image_processor(str(model_dir))
        return cls(model, tokenizer, image_processor, model_type), fingerprint

    def to(self, device: torch.device, dtype: torch.dtype) -> None:
        self.model.to(device=device, dtype=dtype)
        self.device, self.dtype = device, dtype

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        # SigLIP was trained on max_length padding; CLIP pads to the longest text.
        padding = "max_length" if self.model_type == "siglip" else True
        inputs = self.tokenizer(texts, padding=padding, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return _features(self.model.get_text_features(**inputs))

    def embed_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))


def _features(output) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from get_*_features."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("pooler_output", "text_embeds", "image_embeds"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected feature output {type(output).__name__}")


def _siglip_dim(model) -> int:
    return int(model.config.text_config.hidden_size)


def _image_processor(name: str):
    from transformers import AutoImageProcessor

    # The PIL backend is what MultiEmbedTR was trained with; pinning it keeps index and query
    # preprocessing identical whether or not torchvision happens to be installed.
    try:
        return AutoImageProcessor.from_pretrained(name, backend="pil")
    except TypeError:  # transformers without the backend switch
        return AutoImageProcessor.from_pretrained(name)


def _float32_rotary_buffers(
    module: torch.nn.Module,
) -> list[tuple[torch.nn.Module, str, torch.Tensor]]:
    """Float32 copies of every rotary-frequency buffer (``*inv_freq``) under ``module``."""
    found = []
    for sub in module.modules():
        for name, buffer in sub.named_buffers(recurse=False):
            if name.endswith("inv_freq") and buffer.is_floating_point():
                found.append((sub, name, buffer.detach().float().clone()))
    return found


def _local_rank() -> int:
    value = os.environ.get("LOCAL_RANK") or "0"  # empty: unset, as pipeline.distributed reads it
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"LOCAL_RANK={value!r} is not an integer; unset it or fix it") from None


def pick_device(device: str) -> torch.device:
    """``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` (made the current device), else as given."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch_device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if torch_device.type != "cuda":
        return torch_device
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA GPU")
    count = torch.cuda.device_count()
    if torch_device.index is None:
        local_rank = _local_rank()
        if local_rank >= count:
            raise ValueError(
                f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible: start at "
                f"most {count} process(es) per node (torchrun --nproc_per_node {count}), or "
                "check CUDA_VISIBLE_DEVICES"
            )
        torch_device = torch.device("cuda", local_rank)
    elif torch_device.index >= count:
        raise ValueError(f"device {device!r}: only {count} CUDA device(s) are visible")
    # Kernels and allocations without an explicit device (some library code) land here too.
    torch.cuda.set_device(torch_device)
    return torch_device


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype named, or for ``None``/``"auto"`` the fastest one that stays near float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None and dtype != "auto":
        try:
            return _DTYPES[str(dtype).lower()]
        except KeyError:
            raise ValueError(
                f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPES))}, or auto"
            ) from None
    if device.type == "cuda":
        # Native bf16 needs compute capability 8.0 (Ampere); below it, is_bf16_supported() says
        # yes through emulation, which is slow, so T4/V100 get float16.
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "cpu" and _cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _cpu_has_native_bf16() -> bool:
    # Without AVX512-BF16/AMX, bf16 matmuls are emulated and slower than float32.
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _locate(model_id_or_path: str, revision: str | None) -> tuple[Path, str, str | None]:
    """Return (local folder, model id to record, resolved commit or None for local folders)."""
    local = Path(model_id_or_path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise FileNotFoundError(f"{local} has no config.json; is it a model folder?")
        # A folder has no commits: a revision passed with it is not recorded as if it had one.
        return local.resolve(), str(local.resolve()), None
    if local.exists() or model_id_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{model_id_or_path}: no such model folder")

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    config_file = Path(hf_hub_download(model_id_or_path, "config.json", revision=revision))
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("model_type") == MODEL_TYPE:
        # Fetch one weight file, safetensors first; MultiEmbedTR ships pytorch_model.bin.
        try:
            hf_hub_download(model_id_or_path, SAFETENSORS_FILE, revision=revision)
        except EntryNotFoundError:
            hf_hub_download(model_id_or_path, PICKLE_FILE, revision=revision)
        for folder in component_folders(config):
            _download_folder(model_id_or_path, folder, revision)
    else:
        from huggingface_hub import snapshot_download

        snapshot_download(
            model_id_or_path,
            revision=revision,
            allow_patterns=list(SNAPSHOT_FILES),
        )
    snapshot = config_file.parent
    commit = snapshot_commit(snapshot, revision)
    return snapshot, model_id_or_path, commit


def _download_folder(repo_id: str, folder: str, revision: str | None) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, revision=revision, allow_patterns=[f"{folder}/*"])
